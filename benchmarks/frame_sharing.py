"""Training step time when the questions of a batch share their frames (`data.frame_group`).

    python benchmarks/frame_sharing.py --config DEMO/runs/stage3/config.yaml
    python benchmarks/frame_sharing.py --config DEMO/runs/stage3/config.yaml --groups 1 2 4 8 --rounds 3

Times optimizer steps of a training config (a demo writes one per stage under
`DEMO/runs/stageN/config.yaml`, with its data and caches; run from the folder its relative paths start
from) through `seconds_per_step`, the function the demo plans its budget with, once per `data.frame_group`
value and round, each in its own process so that its peak memory is its own; rounds alternate the values
because a shared machine's speed drifts over minutes. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile


def time_group(config: str, group: int, steps: int) -> dict:
    """One measurement in this process: mean seconds per step and peak RSS."""
    from smolrgpt.training.config import load_config
    from smolrgpt.training.trainer import seconds_per_step

    with tempfile.TemporaryDirectory() as scratch:
        cfg = load_config(config, [f"train.output_dir={scratch}/run", f"data.frame_group={group}",
                                   "data.num_workers=0", "logging.tensorboard=false"])
        seconds = seconds_per_step(cfg, steps=steps)
    return {"frame_group": group, "seconds_per_step": seconds,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a training config with its data (DEMO/runs/stage3/config.yaml)")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=16, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = parser.parse_args()
    if not os.path.isfile(args.config):
        parser.error(f"--config {args.config}: no such file (a demo writes DEMO/runs/stage3/config.yaml)")
    if min(args.groups) < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--groups, --steps and --rounds must be positive")
    if args.one is not None:
        print(json.dumps(time_group(args.config, args.one, args.steps)))
        return

    results = {g: [] for g in args.groups}
    for round_no in range(args.rounds):
        for group in args.groups:
            proc = subprocess.run([sys.executable, __file__, "--config", args.config, "--steps", str(args.steps),
                                   "--one", str(group)], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"frame_group {group}: the measurement failed:\n{proc.stderr[-3000:]}")
            results[group].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {round_no + 1}, frame_group {group}: {results[group][-1]['seconds_per_step']:.4f} s/step",
                  file=sys.stderr, flush=True)
    base = min(r["seconds_per_step"] for r in results[args.groups[0]])
    print(f"\ntraining steps of {args.config} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"best of {args.rounds} rounds of {args.steps} steps)")
    print(f"{'frame_group':>11} {'s/step (rounds)':>28} {'best':>8} {'vs first':>9} {'peak RSS GB':>12}")
    rows = []
    for group in args.groups:
        times = [r["seconds_per_step"] for r in results[group]]
        best = min(times)
        rss = max(r["peak_rss_gb"] for r in results[group])
        rows.append({"frame_group": group, "seconds_per_step": times, "best": best, "speedup": base / best,
                     "peak_rss_gb": rss})
        print(f"{group:>11} {', '.join(f'{t:.4f}' for t in times):>28} {best:>8.4f} {base / best:>8.2f}x {rss:>12.2f}")

    print(json.dumps({"benchmark": "frame_sharing", "config": args.config, "cpus": os.cpu_count(),
                      "training": rows}))


if __name__ == "__main__":
    main()
