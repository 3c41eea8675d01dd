"""Where batch-1 decoding time goes: per-token time of the LM forward against its linear layers alone,
the streaming rate of batch-1 matrix-vector products per weight shape, each with the weights run by
F.linear (nn.Linear's row-major weight), by oneDNN from a reordered weight (`OneDnnLinear`, the fp32 layout
`weight_layout="auto"` picks where it is faster) and as fbgemm fp16 weights (`Fp16WeightLinear`, fp16w),
and (optionally) torch.compile.

    python benchmarks/decode_profile.py --preset smolrgpt-600m [--compile]

Random weights, a StaticCache. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache


def decode_rate(model, config, step, tokens: int = 20, prompt: int = 100) -> tuple[float, float]:
    """(seconds of the first measured step, steady tokens/s) for `step(token, mask, position, cache)`."""
    length = prompt + tokens + 8
    cache = StaticCache(config=config, max_cache_len=length)
    with torch.no_grad():
        logits = model(torch.randint(0, 1000, (1, prompt)), cache=cache, use_cache=True).logits
        token = logits[:, -1].argmax(-1)
        mask = torch.zeros(1, length, dtype=torch.long)
        mask[:, :prompt] = 1
        times = []
        for i in range(tokens):
            mask[:, prompt + i] = 1
            start = time.perf_counter()
            logits = step(token[:, None], mask, torch.tensor([[prompt + i]]), cache)
            times.append(time.perf_counter() - start)
            token = logits[:, -1].argmax(-1)
    steady = times[len(times) // 2:]
    return times[0], len(steady) / sum(steady)


LAYOUTS = ("row", "onednn", "fp16w")


def gemv_rate(out_features: int, in_features: int, layout: str = "row", repeats: int = 5) -> float:
    """GB/s (of the bytes stored: 4 per weight, 2 in fp16w) of a one-row product with weights that do
    not stay in cache between calls, run as `layout` runs them."""
    from smolrgpt.modeling.precision import Fp16WeightLinear, OneDnnLinear

    count = max(2, int(6e8 // (out_features * in_features * 4)))
    kind = {"row": lambda linear: linear, "onednn": OneDnnLinear, "fp16w": Fp16WeightLinear}[layout]
    layers = [kind(torch.nn.Linear(in_features, out_features, bias=False)) for _ in range(count)]
    x = torch.randn(1, in_features)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for layer in layers:
                layer(x)
            best = min(best, time.perf_counter() - start)
    return len(layers) * out_features * in_features * (2 if layout == "fp16w" else 4) / best / 1e9


def main(argv=None) -> int:
    from smolrgpt.modeling.config import PRESETS
    from smolrgpt.modeling.precision import Fp16WeightLinear, OneDnnLinear, replace_linears

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smolrgpt-600m", choices=sorted(PRESETS))
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode step")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **PRESETS[args.preset][1])
    model = AutoModelForCausalLM.from_config(config).eval()

    def step(token, mask, position, cache):
        return model(token, attention_mask=mask, position_ids=position, cache=cache, use_cache=True).logits

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weight_gb = sum(m.weight.numel() for m in linears) * 4 / 1e9
    shapes = sorted({(m.out_features, m.in_features) for m in linears})
    result = {"preset": args.preset, "threads": torch.get_num_threads(), "weight_gb": round(weight_gb, 3)}
    for layout in LAYOUTS:
        if layout != "row":  # a fresh copy of the same random weights for each layout
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config).eval()
            replace_linears(model, OneDnnLinear if layout == "onednn" else Fp16WeightLinear)
            linears = [m for m in model.modules() if isinstance(m, (OneDnnLinear, Fp16WeightLinear))]
        _, eager = decode_rate(model, config, step)
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(3):
                for layer in linears:
                    layer(torch.randn(1, 1, layer.in_features))
            linear_s = (time.perf_counter() - start) / 3
        result[layout] = {"decode_tokens_per_s": round(eager, 2), "ms_per_token": round(1000 / eager, 1),
                          "linear_layers_ms_per_token": round(1000 * linear_s, 1),
                          "gemv_gbs_by_shape": {f"{o}x{i}": round(gemv_rate(o, i, layout), 1)
                                                for o, i in shapes}}
    for layout in LAYOUTS[1:]:
        result[f"{layout}_speedup"] = round(result[layout]["decode_tokens_per_s"]
                                            / result["row"]["decode_tokens_per_s"], 2)
    if args.compile:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
        first, compiled = decode_rate(model, config, torch.compile(step, dynamic=False))
        result.update(compiled_row_tokens_per_s=round(compiled, 2), compile_s=round(first, 1))
    print(f"decode of {args.preset}'s LM, batch 1, {result['threads']} threads, {weight_gb:.2f} GB of fp32 weights")
    print(f"{'weights':<10}{'ms/token':>10}{'tokens/s':>10}{'linears ms':>12}   GEMV GB/s per shape (out x in)")
    for layout in LAYOUTS:
        r = result[layout]
        per_shape = ", ".join(f"{k} {v}" for k, v in r["gemv_gbs_by_shape"].items())
        print(f"{layout:<10}{r['ms_per_token']:>10}{r['decode_tokens_per_s']:>10}{r['linear_layers_ms_per_token']:>12}"
              f"   {per_shape}")
    print(f"decode against F.linear: oneDNN {result['onednn_speedup']:.2f}x, fp16w {result['fp16w_speedup']:.2f}x")
    if args.compile:
        print(f"torch.compile (F.linear weights): {result['compiled_row_tokens_per_s']} tokens/s after a "
              f"{result['compile_s']} s first step")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
