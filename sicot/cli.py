"""The `sicot` command. Each area registers its own subcommands:

  sicot.data.cli       synth, import
  sicot.trainer.cli    train, evaluate, score
  sicot.trainer.enrollment.catalogue enroll
  sicot.trainer.enrollment.faiss_index  index
  sicot.pipeline.cli   run, compile
  sicot.serving.cli    serve, predict
  sicot.demo           demo (the README's main job)

Modules import their heavy dependencies (TensorFlow, TFX, Beam) inside the command handlers so
that `sicot --help` stays fast. A handler returns an exit code (or None for 0); a `UserError`
is printed as one clear line and exits 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile

from sicot import console
from sicot.errors import UserError

_COMMAND_MODULES = (
    "sicot.data.cli",
    "sicot.trainer.cli",
    "sicot.trainer.enrollment.catalogue",
    "sicot.trainer.enrollment.faiss_index",
    "sicot.pipeline.cli",
    "sicot.serving.cli",
    "sicot.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sicot",
        description="SICoT: long-tailed product recognition with side information.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that area has no commands yet
                continue
            raise
        module.register(subparsers)
    for sub in subparsers.choices.values():
        sub.add_argument("--verbose", action="store_true",
                         help="show TensorFlow, absl and library messages here (by default they "
                              "go to a log file under the run folder)")
    return parser


# The folder each command works in (its option), where its log file goes (also when its parents
# are new: the demo's default runs/demo does not exist in a fresh clone); `serve` logs to the
# terminal (a server's log is its output); the rest, and remote folders, log under the system's
# temporary folder.
_RUN_FOLDER_OPTION = {"demo": "workdir", "run": "pipeline_root", "train": "out",
                      "import": "out", "synth": "out"}
_TERMINAL_COMMANDS = ("serve",)


def _creatable(folder: str) -> bool:
    """Whether `folder` is, or could be made as, a local folder (its nearest existing ancestor
    is a folder); nothing is created here (`console.send_noise_to` makes it when it logs)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path)


def log_path(args) -> str:
    folder = getattr(args, _RUN_FOLDER_OPTION.get(args.command, ""), None)
    if not folder or "://" in folder or not _creatable(folder):
        folder = os.path.join(tempfile.gettempdir(), "sicot")
    return os.path.join(folder, console.LOG_FOLDER, f"sicot-{args.command}.log")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose and args.command not in _TERMINAL_COMMANDS:
        inherited = os.environ.get(console.LOG_ENV)
        path = console.send_noise_to(inherited or log_path(args))
        if console.quieted() and not inherited:
            print(f"(TensorFlow and library messages: {path}; --verbose shows them here)",
                  file=console.stream())
    try:
        code = args.handler(args)
    except UserError as e:
        print(f"sicot {args.command}: error: {e}", file=console.stream())
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
