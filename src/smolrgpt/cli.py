"""The `smolrgpt` command: a thin dispatcher.

Each sub-command lives in the module that owns its work and exposes two functions:
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only for the command being run,
so `smolrgpt score` or `smolrgpt --help` never pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line description). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("smolrgpt.modeling.commands", "print a model preset's parameter counts per module and stage"),
    "init": ("smolrgpt.modeling.commands", "write a randomly initialised (or backbone-initialised) checkpoint"),
    "convert": ("smolrgpt.modeling.commands", "import a checkpoint in the original authors' key layout"),
    "hello": ("smolrgpt.modeling.commands", "build the tiny model and answer one example question"),
    "data": ("smolrgpt.data.commands", "data-file tools: `data check FILE` validates every record"),
}


def _command_module(name: str):
    module = importlib.import_module(COMMANDS[name][0])
    return module


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smolrgpt",
        description="SmolRGPT: spatial question answering on RGB + depth + region masks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = _command_module(name)
            getattr(module, f"add_{name.replace('-', '_')}_arguments")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = next((a for a in argv if not a.startswith("-")), None)
    if name not in COMMANDS:
        name = None
    parser = build_parser(only=name)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from smolrgpt.errors import SmolRGPTError

    module = _command_module(args.command)
    try:
        return int(getattr(module, f"run_{args.command.replace('-', '_')}")(args) or 0)
    except SmolRGPTError as exc:  # expected failures: one clear line, no stack trace
        print(f"smolrgpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
