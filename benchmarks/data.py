"""How fast `smolrgpt synth` makes data: frames/s and QA/s at the default 640x360 and at the real 1920x1080.

    python benchmarks/data.py                      # defaults: 40 frames at 640x360, 6 at 1920x1080, 1 worker
    python benchmarks/data.py --workers 2 --small-frames 200

Prints a table, then one JSON line (frames_per_s and qa_per_s per size, peak_rss_mb). Files go to a temporary
folder that is removed afterwards; every run starts from an empty folder, so nothing is skipped as resumed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def peak_rss_mb() -> float:
    """Largest resident set of this process or any finished worker (Linux reports KiB, macOS bytes)."""
    scale = 1 / 1024 / 1024 if sys.platform == "darwin" else 1 / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) * scale, 1)


def time_size(width: int, height: int, frames: int, questions: int, workers: int, seed: int) -> dict:
    from smolrgpt.synth.dataset import SynthConfig, generate_dataset

    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        config = SynthConfig(out=os.path.join(tmp, "set"), seed=seed, width=width, height=height,
                             questions_per_frame=questions, frames=(("train", frames),))
        start = time.perf_counter()
        summary = generate_dataset(config, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs) / 2**20
    qa = summary["splits"]["train"]["questions"]
    return {"size": f"{width}x{height}", "frames": frames, "qa": qa, "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 2), "qa_per_s": round(qa / seconds, 1),
            "seconds_per_1000_qa": round(1000 * seconds / max(qa, 1), 1), "disk_mb": round(size_mb, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small-frames", type=int, default=40, help="frames at 640x360 (default 40)")
    parser.add_argument("--large-frames", type=int, default=6, help="frames at 1920x1080 (default 6)")
    parser.add_argument("--questions-per-frame", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    time_size(320, 180, 2, args.questions_per_frame, 1, args.seed + 1)  # warm-up: imports, first allocations
    rows = [time_size(640, 360, args.small_frames, args.questions_per_frame, args.workers, args.seed),
            time_size(1920, 1080, args.large_frames, args.questions_per_frame, args.workers, args.seed)]
    header = f"{'size':>10} {'frames':>6} {'QA':>5} {'seconds':>8} {'frames/s':>9} {'QA/s':>7} {'s/1000 QA':>10} {'disk MB':>8}"
    print(f"smolrgpt synth, {args.workers} worker(s), {os.cpu_count()} CPU(s)")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['size']:>10} {r['frames']:>6} {r['qa']:>5} {r['seconds']:>8.2f} {r['frames_per_s']:>9.2f} "
              f"{r['qa_per_s']:>7.1f} {r['seconds_per_1000_qa']:>10.1f} {r['disk_mb']:>8.1f}")
    result = {"benchmark": "data", "workers": args.workers,
              **{f"{r['size']}_{k}": r[k] for r in rows for k in ("frames_per_s", "qa_per_s")},
              "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
