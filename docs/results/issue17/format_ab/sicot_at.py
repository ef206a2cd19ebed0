"""Run the `sicot` CLI of another checkout with the lead venv: python sicot_at.py ROOT args..."""
import sys
import __editable___sicot_0_1_0_finder as finder
root = sys.argv.pop(1)
for key, value in list(finder.MAPPING.items()):
    finder.MAPPING[key] = value.replace('/work/wt/lead', root)
from sicot.cli import main
import sicot
assert sicot.__file__.startswith(root), sicot.__file__
sys.exit(main())
