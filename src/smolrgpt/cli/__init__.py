"""The `smolrgpt` command: a thin dispatcher.

The command line is the package's top layer: each family of sub-commands is one module of this folder
(argument parsing, messages, exit codes) calling the library folders below it, which never import it. A
module exposes two functions per command: `add_<name>_arguments(parser)` and `run_<name>(args) -> int`.
Modules are imported only for the command being run, so `smolrgpt score` or `smolrgpt --help` never pay
for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line description). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("smolrgpt.cli.demo", "the main job: synthetic data, 3-stage training, evaluation and report "
                                  "within a time budget (resumable)"),
    "info": ("smolrgpt.cli.model", "print a model preset's parameter counts per module and stage"),
    "init": ("smolrgpt.cli.model", "write a randomly initialised (or backbone-initialised) checkpoint"),
    "convert": ("smolrgpt.cli.model", "import a checkpoint in the original authors' key layout"),
    "hello": ("smolrgpt.cli.model", "build the tiny model and answer one example question"),
    "synth": ("smolrgpt.cli.synth", "generate the built-in synthetic warehouse data set (Track 3 layout)"),
    "predict": ("smolrgpt.cli.evaluate", "answer a split with a checkpoint (batched, resumable)"),
    "eval": ("smolrgpt.cli.evaluate", "predict, score and report on a split with answers"),
    "score": ("smolrgpt.cli.evaluate", "score a Track 3 submission with the official formula"),
    "normalize": ("smolrgpt.cli.evaluate", "free-form answers -> normalized answers (no model)"),
    "data": ("smolrgpt.cli.data", "data-file tools: `data check FILE` validates every record"),
    "ask": ("smolrgpt.cli.ask", "answer one question about an RGB-D frame and its regions"),
    "serve": ("smolrgpt.cli.serve", "HTTP service (batched) and web page for a checkpoint"),
    "train": ("smolrgpt.cli.train", "train one curriculum stage (YAML config + key=value overrides)"),
    "curriculum": ("smolrgpt.cli.train", "run the three training stages in turn (resumable)"),
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
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C: what was written is complete (atomic writes); a rerun resumes
        print(f"smolrgpt {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the system refuses (no such folder, permission, disk full): name it
        where = f"cannot use {exc.filename}: " if exc.filename is not None else ""
        print(f"smolrgpt {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except RecursionError:  # JSON nested deeper than Python's parser can follow, in a reader without its own check
        print(f"smolrgpt {args.command}: error: an input file is nested too deeply to read", file=sys.stderr)
        return 2

