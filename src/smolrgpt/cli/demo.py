"""`smolrgpt demo [--out DIR] [--budget MINUTES] [--config FILE] [KEY=VALUE ...]`."""
from __future__ import annotations

import argparse


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="smolrgpt-demo",
                   help="run folder (default ./smolrgpt-demo); a rerun with the same settings resumes it")
    p.add_argument("--budget", type=float, metavar="MINUTES",
                   help="wall-clock minutes for the whole run (default: budget.minutes of the config, 12)")
    p.add_argument("--config", help="demo settings (YAML; default: the packaged demo.yaml)")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings overrides, e.g. data.val_frames=100 model.language=smollm2-offline")


def run_demo(args) -> int:
    from smolrgpt.demo.config import load_demo_config
    from smolrgpt.demo.runner import Demo
    from smolrgpt.training.allocator import tune_allocator

    overrides = list(args.overrides)
    if args.budget is not None:
        overrides.append(f"budget.minutes={args.budget}")
    config = load_demo_config(args.config, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    tune_allocator()  # as `smolrgpt train` does: steps were 1.6x slower without it (half the CPU in the kernel)
    Demo(config, args.out, progress=not args.no_progress).run()
    return 0
