"""What verifying a checkpoint's manifest costs at load time: sha256 of every file, against reading the
weights with safetensors. Writes a folder holding one float32 safetensors file of --mb megabytes (random
values) plus its manifest, then times `verify_manifest` and `safetensors.torch.load_file` (summing the tensor, so every byte is
read), each --repeats
times (the first run of each reads from the page cache the write left behind, as a load right after a copy
would).

    python benchmarks/manifest_cost.py --mb 1900      # about the size of the 600m checkpoint in fp32

Prints a table (step, best seconds, MB/s) and one JSON line with the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="size of the weights file in MB (default 512)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to write the folder (default: a temporary folder, removed after)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    from smolrgpt.modeling.checkpoint import verify_manifest, write_manifest

    root = Path(args.dir or tempfile.mkdtemp(prefix="smolrgpt-manifest-"))
    folder = root / "ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        save_file({"w": torch.rand(args.mb * 2**20 // 4)}, str(folder / "model.safetensors"))
        write_manifest(folder)
        size_mb = (folder / "model.safetensors").stat().st_size / 2**20
        rows = {}
        for name, step in (("verify_manifest (sha256)", lambda: verify_manifest(folder)),
                           # .sum() touches every page: load_file maps the file and reads lazily
                           ("safetensors load_file", lambda: load_file(str(folder / "model.safetensors"))["w"].sum())):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            rows[name] = min(times)
        print(f"{'step':<28}{'best s':>10}{'MB/s':>10}")
        for name, seconds in rows.items():
            print(f"{name:<28}{seconds:>10.3f}{size_mb / seconds:>10.0f}")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"file_mb": round(size_mb, 1), "verify_s": round(rows["verify_manifest (sha256)"], 3),
                          "load_s": round(rows["safetensors load_file"], 3), "peak_rss_mb": round(peak_mb, 1)}))
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
