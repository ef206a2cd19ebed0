"""The `sicot` command. Each area registers its own subcommands:

  sicot.data.cli       synth, import
  sicot.trainer.cli    train, evaluate
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
import sys

from sicot.errors import UserError

_COMMAND_MODULES = (
    "sicot.data.cli",
    "sicot.trainer.cli",
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
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except UserError as e:
        print(f"sicot {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
