"""`smolrgpt synth`: the command line of the built-in data set (synth/dataset.py)."""
from __future__ import annotations

import argparse

from smolrgpt.errors import ConfigError
from smolrgpt.synth.dataset import SynthConfig, default_splits, generate_dataset, parse_size, parse_splits


# --------------------------------------------------------------------------------------------------- CLI
def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (created; re-running resumes)")
    parser.add_argument("--frames", type=int, default=100,
                        help="train frames; val and test get a tenth each, rounded up (default 100)")
    parser.add_argument("--splits", default=None,
                        help="frames per split instead of --frames, e.g. train=800,val=100,test=100")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each frame derives its own (default 0)")
    parser.add_argument("--size", default="640x360",
                        help="image size WIDTHxHEIGHT (default 640x360: fast, objects still tens of pixels; "
                             "the real frames are 1920x1080)")
    parser.add_argument("--questions-per-frame", type=int, default=5,
                        help="questions asked about each frame (default 5, the real data has ~5)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering frames in parallel (default 1)")
    parser.add_argument("--instance-maps", action="store_true",
                        help="also write 16-bit instance-id PNGs to {split}/instances/")
    parser.add_argument("--overwrite", "--force", dest="force", action="store_true",
                        help="replace what --out holds (frames made with other settings, or anything else)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    width, height = parse_size(args.size)
    frames = parse_splits(args.splits) if args.splits else default_splits(args.frames)
    if not 1 <= args.questions_per_frame <= 50:
        raise ConfigError(f"--questions-per-frame must be between 1 and 50, got {args.questions_per_frame}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    return SynthConfig(out=str(args.out), seed=args.seed, width=width, height=height,
                       questions_per_frame=args.questions_per_frame, frames=frames, instance_maps=args.instance_maps)


def run_synth(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = generate_dataset(config, workers=args.workers, force=args.force, progress=not args.quiet)
    total_q = sum(s["questions"] for s in summary["splits"].values())
    total_f = sum(s["frames"] for s in summary["splits"].values())
    parts = ", ".join(f"{k} {v['frames']} frames / {v['questions']} QA" for k, v in summary["splits"].items())
    rate = total_q / summary["seconds"] if summary["seconds"] > 0 else float("nan")
    print(f"wrote {summary['out']}: {parts} ({total_f} frames, {total_q} QA in {summary['seconds']:.1f} s, "
          f"{rate:.1f} QA/s)")
    return 0

