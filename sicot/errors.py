"""`UserError`: bad input from the user, raised anywhere, printed by the `sicot` command.

Its own module (below every package in the import graph) so that data, trainer, pipeline and
serving code can raise it without importing the command-line entry point.
"""


class UserError(Exception):
    """Bad input from the user: printed as one line naming the input and what is wrong."""
