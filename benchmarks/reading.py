"""Reading speed: samples/s and peak memory through reader + processor, with and without the cache.

    python benchmarks/reading.py --frames 8 --questions-per-frame 4 --masks 15

Writes a small Track 3-layout split of 1920x1080 frames (RGB and depth PNGs, 15 RLE masks per question),
then times `processor.prepare` straight from the files against `PreparedCache.prepare` after
`data prepare`. Each variant runs in its own process so peak RSS is its own. Prints a table, then one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_split(root: Path, frames: int, per_frame: int, masks: int, size=(1080, 1920)) -> Path:
    from PIL import Image
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    h, w = size
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "depths").mkdir(parents=True)
    yy, xx = np.mgrid[0:h, 0:w]
    records = []
    for f in range(frames):
        rgb = np.stack([(xx + f * 7) % 256, yy % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "val" / "images" / f"{f:06d}.png")
        Image.fromarray((yy * 255 // h).astype(np.uint8)).save(root / "val" / "depths" / f"{f:06d}_depth.png")
        for q in range(per_frame):
            rles = []
            for _ in range(masks):
                m = np.zeros((h, w), np.uint8)
                y, x = rng.integers(0, h - 150), rng.integers(0, w - 200)
                m[y:y + rng.integers(20, 150), x:x + rng.integers(20, 200)] = 1
                rles.append({"size": [h, w], "counts": coco_mask.encode(np.asfortranarray(m))["counts"].decode()})
            question = "Given the regions " + " ".join(["<mask>"] * masks) + ", how many pallets are in the buffer?"
            records.append({"id": f"{f:04d}{q:04d}" + "0" * 24, "image": f"{f:06d}.png",
                            "conversations": [{"from": "human", "value": question},
                                              {"from": "gpt", "value": "There are two pallets."}],
                            "rle": rles, "category": "count", "normalized_answer": 2,
                            "freeform_answer": "There are two pallets."})
    (root / "val.json").write_text(json.dumps(records))
    return root / "val.json"


def measure(split: str, cache: str | None) -> dict:
    """One variant, in this process: every sample through reader + (cache or processor)."""
    from smolrgpt.data import open_dataset
    from smolrgpt.processing.cache import PreparedCache
    from smolrgpt.processing.processor import SmolRGPTProcessor
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer

    processor = SmolRGPTProcessor(build_tiny_tokenizer(), image_size=256, mask_grid_size=64)
    preparer = PreparedCache(cache, processor, source=split) if cache else processor
    start = time.perf_counter()
    n = 0
    for sample in open_dataset(split):
        preparer.prepare(sample)
        n += 1
    seconds = time.perf_counter() - start
    return {"samples": n, "seconds": seconds, "samples_per_s": n / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--questions-per-frame", type=int, default=4)
    parser.add_argument("--masks", type=int, default=15)
    parser.add_argument("--measure", nargs=2, metavar=("SPLIT", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        split, cache = args.measure
        print(json.dumps(measure(split, None if cache == "-" else cache)))
        return 0
    root = Path(tempfile.mkdtemp(prefix="smolrgpt-reading-"))
    split = write_split(root, args.frames, args.questions_per_frame, args.masks)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "smolrgpt.cli", "data", "prepare", str(split), "--out", str(root / "cache"),
                    "--preset", "smolrgpt-600m", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    prepare_s = time.perf_counter() - start
    results = {}
    for name, cache in (("direct", "-"), ("cache", str(root / "cache"))):
        out = subprocess.run([sys.executable, __file__, "--measure", str(split), cache], check=True,
                             capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    cache_mb = sum(p.stat().st_size for p in (root / "cache").iterdir()) / 1e6
    print(f"reader + processor, {args.frames} frames x {args.questions_per_frame} questions, {args.masks} masks, "
          f"1920x1080")
    print(f"{'variant':<10}{'samples/s':>12}{'peak RSS MB':>14}")
    for name, r in results.items():
        print(f"{name:<10}{r['samples_per_s']:>12.2f}{r['peak_rss_mb']:>14.0f}")
    print(f"data prepare: {prepare_s:.1f} s, cache {cache_mb:.1f} MB; speed-up "
          f"{results['cache']['samples_per_s'] / results['direct']['samples_per_s']:.1f}x")
    print(json.dumps({"benchmark": "reading", "masks": args.masks, "samples": results["direct"]["samples"],
                      "direct_samples_per_s": round(results["direct"]["samples_per_s"], 2),
                      "direct_peak_rss_mb": round(results["direct"]["peak_rss_mb"], 1),
                      "cache_samples_per_s": round(results["cache"]["samples_per_s"], 2),
                      "cache_peak_rss_mb": round(results["cache"]["peak_rss_mb"], 1),
                      "prepare_s": round(prepare_s, 1), "cache_mb": round(cache_mb, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
