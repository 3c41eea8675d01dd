"""Inference precision per device: fp32, int8 weights (CPU) or bf16 (GPU), chosen automatically.

This CPU class (AVX2, no bf16 instructions) runs bf16 matrix products 5-70x slower than fp32, while
fbgemm's int8 kernels are its fast path; on GPUs bf16 is. `auto` picks int8 on CPU and bf16 on a GPU
that supports it.

In fp32 on a CPU, batch-1 decoding streams every language-model weight once per token. This CPU's BLAS
streams a weight stored column-major ([out, in] with strides (1, out): `x @ W.T` becomes a row-major
matrix-vector product) 1.2-1.5x faster than the row-major one nn.Linear keeps (24-27 GB/s against 17-21
GB/s for SmolLM2-360M's shapes; benchmarks/decode_profile.py), while prefill matrix products run at the
same speed either way. `weight_layout="auto"` measures both layouts on the running CPU once per process
and keeps the faster.
"""
from __future__ import annotations

import ctypes
import functools
import time

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("auto", "fp32", "int8", "bf16")
WEIGHT_LAYOUTS = ("auto", "row", "column")
# Below this many bytes of language-model weights the weights stay in the CPU caches between tokens and
# decoding is not limited by memory reads, so the layout is left alone.
LAYOUT_MIN_BYTES = 64 * 2**20


def resolve_precision(precision: str, device: str | torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "int8" if device.type == "cpu" else "fp32"


def apply_precision(model: nn.Module, precision: str, device: str | torch.device,
                    weight_layout: str = "auto") -> nn.Module:
    """Convert an eval-mode model in place (returns it). int8 = dynamic quantisation of every Linear
    layer: weights stored as int8 with per-channel scales, activations quantised on the fly.
    weight_layout (fp32 on a CPU): "column" stores the language model's linear weights column-major,
    "row" leaves them, "auto" picks the faster on the running CPU (`column_major_speedup`)."""
    resolved = resolve_precision(precision, device)
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"weight_layout must be one of {WEIGHT_LAYOUTS}, got {weight_layout!r}")
    cpu_fp32 = resolved == "fp32" and torch.device(device).type == "cpu"
    if weight_layout == "column" and not cpu_fp32:
        raise ValueError(f"weight_layout='column' is a CPU fp32 option; this is {resolved} on {device}")
    if cpu_fp32 and weight_layout != "row":
        shapes = linear_shapes(model.language_model)
        mix = tuple(sorted((shape, shapes.count(shape)) for shape in set(shapes)))
        if weight_layout == "column" or (sum(4 * o * i for o, i in shapes) >= LAYOUT_MIN_BYTES
                                         and column_major_speedup(mix) >= 1.1):
            to_column_major(model.language_model)
        return model
    if resolved == "bf16":
        if torch.device(device).type == "cpu":
            raise ValueError("bf16 on this CPU is slower than fp32 by 5-70x; use fp32 or int8")
        return model.to(dtype=torch.bfloat16)
    if resolved == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only; use bf16 on GPUs")
        from torch.ao.quantization import quantize_dynamic
        from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig

        torch.backends.quantized.engine = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines \
            else torch.backends.quantized.engine
        # Untie the output head first: quantize_dynamic swaps Linear modules, and the embedding must stay
        # a float lookup table.
        lm = model.language_model
        if lm.lm_head.weight is lm.get_input_embeddings().weight:
            lm.lm_head.weight = nn.Parameter(lm.lm_head.weight.detach().clone(), requires_grad=False)
        for name in ("vision_tower", "rgb_connector", "depth_connector", "language_model"):
            # in place: a copy would hold the fp32 and int8 weights at once (peak memory x1.25+)
            quantize_dynamic(getattr(model, name), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                             inplace=True)
    return model


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    """(out_features, in_features) of every distinct nn.Linear weight (a tied weight counts once)."""
    seen, shapes = set(), []
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and id(sub.weight) not in seen:
            seen.add(id(sub.weight))
            shapes.append(tuple(sub.weight.shape))
    return shapes


@torch.no_grad()
def to_column_major(module: nn.Module) -> nn.Module:
    """Store every nn.Linear weight of `module` column-major, in place; same values, shapes and
    parameter names, and a weight tied to another module (the input embedding) stays tied. One weight
    at a time, so the peak memory grows by one weight, not by the model. For inference: safetensors
    saves contiguous tensors only, so save a model that was not converted."""
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                holders.setdefault(id(param), []).append((sub, name))
    linears = [sub for sub in module.modules() if isinstance(sub, nn.Linear)]
    for sub in linears:
        weight = sub.weight
        if weight.dim() != 2 or weight.stride(0) == 1:  # already column-major (a tied weight seen before)
            continue
        column = nn.Parameter(weight.t().contiguous().t(), requires_grad=weight.requires_grad)
        for holder, name in holders.pop(id(weight)):
            setattr(holder, name, column)
        del weight, column
        _return_freed_memory()
    return module


def _return_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc only). After a model has been freed in the same
    process, glibc serves weight-sized allocations from its heap and keeps the freed row-major copies
    resident: converting smolrgpt-600m then left RSS 0.9 GB higher than the model. Trimming after each
    weight keeps the conversion's peak at one extra weight."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


@functools.lru_cache(maxsize=None)
def column_major_speedup(mix: tuple[tuple[tuple[int, int], int], ...], probe_bytes: int = 128 * 2**20) -> float:
    """How much faster one batch-1 F.linear pass over a model's weights runs column-major than row-major
    on the running CPU (>1: column-major is faster). `mix` is ((out, in), how many) per weight shape. Times
    about `probe_bytes` of constant weights per layout, shared between the shapes as in the model, so they
    do not stay in the CPU caches."""
    total = sum(n * o * i for (o, i), n in mix)
    shapes = [(o, i, max(1, round(probe_bytes * n / total / (4 * o * i)))) for (o, i), n in mix]
    inputs = [torch.full((1, i), 0.5) for o, i, count in shapes for _ in range(count)]

    def seconds(column_major: bool) -> float:
        # one layout's weights at a time: the probe's peak memory is probe_bytes, not twice that
        weights = [torch.full((i, o), 0.5).t() if column_major else torch.full((o, i), 0.5)
                   for o, i, count in shapes for _ in range(count)]
        F.linear(inputs[0], weights[0])  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for w, x in zip(weights, inputs):
                F.linear(x, w)
            best = min(best, time.perf_counter() - start)
        return best

    return seconds(False) / seconds(True)
