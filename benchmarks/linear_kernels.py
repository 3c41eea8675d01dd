"""The linear-layer kernels behind the precision modes, side by side: milliseconds per call and GFLOP/s
for each row count and weight shape, with F.linear (MKL on torch's x86 CPU build), `OneDnnLinear`
(fp32, oneDNN from a reordered weight), `Fp16WeightLinear` (fp16w), `Int8WeightLinear` (int8), and for
reference a bf16 F.linear on bf16 inputs (a CPU speed only: bf16 is not a CPU mode, its answers are not
gated).

    python benchmarks/linear_kernels.py
    python benchmarks/linear_kernels.py --rows 1 8 64 512 --shapes 2560x960 960x2560 3072x768

The weights fit in the CPU caches at these sizes, so the 1-row figures show each kernel's compute and
call overhead, not memory reads (benchmarks/decode_profile.py times reads). Prints a table, then one
JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time

import torch

KINDS = ("F.linear", "onednn", "fp16w", "int8", "bf16")


def layer_of(kind: str, linear: torch.nn.Linear):
    from smolrgpt.modeling.precision import (Fp16WeightLinear, Int8WeightLinear, OneDnnLinear, onednn_available,
                                             supported)

    if (kind == "onednn" and not onednn_available()) or (kind == "fp16w" and not supported("fp16w", "cpu")):
        return None  # this torch build or CPU has no such kernel
    if kind == "bf16":
        half = copy.deepcopy(linear).to(torch.bfloat16)
        return lambda x: half(x.to(torch.bfloat16))
    return {"F.linear": lambda x: x, "onednn": OneDnnLinear, "fp16w": Fp16WeightLinear,
            "int8": Int8WeightLinear}[kind](linear)


def ms_per_call(layer, x, seconds: float = 0.2) -> float:
    with torch.no_grad():
        layer(x)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 3:
            layer(x)
            calls += 1
        return (time.perf_counter() - start) / calls * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 128, 512])
    parser.add_argument("--shapes", nargs="+", default=["2560x960", "960x2560", "3072x768"],
                        help="OUTxIN weight shapes (SmolLM2-360M's MLP, SigLIP2-B's MLP)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows_out = []
    for shape in args.shapes:
        out_features, in_features = (int(v) for v in shape.split("x"))
        linear = torch.nn.Linear(in_features, out_features, bias=False)
        layers = {kind: layer_of(kind, linear) for kind in KINDS}
        for rows in args.rows:
            x = torch.randn(rows, in_features)
            row = {"shape": shape, "rows": rows}
            for kind, layer in layers.items():
                ms = ms_per_call(layer, x) if layer is not None else None
                row[kind] = None if ms is None else {"ms": round(ms, 4),
                                                     "gflops": round(2 * rows * in_features * out_features / ms / 1e6, 1)}
            rows_out.append(row)
    result = {"benchmark": "linear_kernels", "threads": torch.get_num_threads(), "results": rows_out,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(f"linear kernels, {result['threads']} threads: ms per call (GFLOP/s)")
    print(f"{'shape':<10}{'rows':>6}" + "".join(f"{k:>20}" for k in KINDS))
    for row in rows_out:
        cells = "".join(f"{'n/a':>20}" if row[k] is None else f"{row[k]['ms']:>11.3f} ({row[k]['gflops']:>6.0f})"
                        for k in KINDS)
        print(f"{row['shape']:<10}{row['rows']:>6}{cells}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
