"""Inference precision per device: fp32, fp16 or int8 weights with fp32 math (CPU), bf16 (GPU).

Decoding is bandwidth-bound (each token reads every language-model weight once), vision and prefill are
compute-bound. So the reduced-precision CPU modes store only the language model's linear weights in fewer
bytes and keep activations, accumulation, the vision tower and the connectors in fp32:
- `fp16w`: fp16 weights through fbgemm's fp16 GEMM (`quantized::linear_dynamic_fp16`; activations stay
  fp32, only the weights are rounded, to 11 significant bits). Half the bytes per token, and fbgemm's
  kernel also runs 2-8-row batches and prefill no slower than MKL's fp32 (benchmarks/inference.py).
- `int8`: weight-only int8, one symmetric scale per output channel, through ATen's int8-packed matmul
  (`torch._weight_int8pack_mm`, what torchao's int8 weight-only quantisation lowers to). A quarter of the
  bytes, but on torch 2.13's CPU build that kernel is several times slower than fp32 at 1-8 rows (6 and
  5 GFLOP/s against 36 and 64 for MKL, benchmarks/linear_kernels.py), and it changed 22 of 32 greedy
  answers of the real SmolLM2-135M, so `auto` never picks it. Layers that see more than INT8_PACKED_ROWS
  rows at once (prefill) multiply with the dequantised weight instead.
The old int8 mode (torch.ao dynamic quantisation, deprecated, and it quantised activations too, which
changed 7 of 8 greedy answers of the real SmolLM2-135M) is gone; `int8` now names the weight-only mode.

`auto` picks, per device, the fastest mode that the accuracy gate (benchmarks/precision_accuracy.py)
found accuracy-preserving: `ACCURACY_PRESERVING` records its verdicts, docs/performance.md the numbers.

On a CPU every nn.Linear that a mode leaves in fp32 (the whole model in fp32; the vision tower,
connectors and region extensions in fp16w and int8) can be run by oneDNN from a weight reordered once
into its blocked layout (`OneDnnLinear`): the same fp32 math, only the order of the sums differs. torch's
CPU build sends F.linear to MKL, which on some x86 CPUs (AMD's among them) takes a narrower code path:
there oneDNN ran 2.3-2.6x faster for the vision tower's and prefill's products and 1.8-5.3x faster for
1-8-row decoding products (benchmarks/linear_kernels.py), and a batch-1 decode step of SmolLM2-360M took
2.0x less time (benchmarks/decode_profile.py). `weight_layout="auto"` measures
both on the running CPU once per process and keeps oneDNN only where it is at least 1.1x faster.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from smolrgpt.modeling.precision_modes import PRECISIONS

WEIGHT_LAYOUTS = ("auto", "row", "onednn")
# Below this many bytes of linear weights a model stays in the CPU caches and per-call overhead, not the
# kernel, sets its speed: auto leaves the layout alone there and keeps fp32 language-model weights.
LAYOUT_MIN_BYTES = 64 * 2**20
# The accuracy gate's verdicts: >= 99% of normalized answers equal to fp32's and the Track 3 score within
# 0.5 points on a trained checkpoint, and identical greedy answers on the real SmolLM2-135M
# (benchmarks/precision_accuracy.py; numbers in docs/performance.md). fp16w: identical on both; int8: 99.7%
# identical on the demo checkpoint but 10 of 32 identical answers on SmolLM2-135M. bf16 stays False until
# benchmarks/gpu_check.py has measured its agreement with fp32 on a GPU.
ACCURACY_PRESERVING = {"fp32": True, "fp16w": True, "int8": False, "bf16": False}
# Fastest first, as measured by benchmarks/inference.py (int8 is slowest on a CPU: see above).
SPEED_ORDER = {"cpu": ("fp16w", "fp32", "int8"), "cuda": ("bf16", "fp32")}
# oneDNN picks its blocked weight layout for an expected row count; 8 (the largest decode batch) runs
# 1-row decoding, 2-8-row batches and prefill/vision products at their best speeds alike.
ONEDNN_BATCH_HINT = 8
# int8 layers multiply up to this many rows with the int8 kernel (decode steps, batches of up to 8 rows
# and a little more); larger inputs (prefill) use the dequantised weight, where compute, not bytes, counts.
INT8_PACKED_ROWS = 16

log = logging.getLogger(__name__)


def supported(precision: str, device: str | torch.device) -> bool:
    """Whether `precision` (not auto) runs on `device`: fp16w and int8 on CPUs, bf16 on bf16 GPUs."""
    kind = torch.device(device).type
    if precision == "fp16w":
        return kind == "cpu" and "fbgemm" in torch.backends.quantized.supported_engines
    if precision == "int8":
        return kind == "cpu"
    if precision == "bf16":
        return kind == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "fp32"


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The mode to run: `precision` itself, or for auto the fastest accuracy-preserving mode the device
    supports (logged, so a user can see which one it picked)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    for mode in SPEED_ORDER.get(kind, ("fp32",)):
        if ACCURACY_PRESERVING[mode] and supported(mode, device):
            log.info("precision=auto picked %s on %s", mode, kind)
            return mode
    return "fp32"


def apply_precision(model: nn.Module, precision: str, device: str | torch.device,
                    weight_layout: str = "auto") -> nn.Module:
    """Convert an eval-mode model in place (returns it) for inference; `model.inference_precision` names
    the mode run and `model.weight_layout` how the remaining fp32 linear layers run.
    fp16w / int8: the language model's nn.Linear layers (the output head included; the input embedding
    stays a float table) get fp16 / per-channel int8 weights, everything else stays fp32.
    weight_layout (CPU): "onednn" runs every remaining fp32 nn.Linear from a oneDNN-reordered weight
    (`OneDnnLinear`), "row" leaves them to F.linear, "auto" picks the faster on the running CPU
    (`onednn_speedup`). A converted model is for inference only: save one that was not converted."""
    resolved = resolve_precision(precision, device)
    if precision == "auto" and resolved == "fp16w" and _linear_bytes(model.language_model) < LAYOUT_MIN_BYTES:
        # weights that stay in the CPU caches are not read from memory: fewer bytes gain nothing there, and
        # fbgemm's fp16 kernel is slower than fp32 on such small matrices (the tiny demo model: 2.2 against
        # 2.6 questions/s in benchmarks/precision_accuracy.py)
        resolved = "fp32"
        log.info("precision=auto: the language model's weights fit in the caches; fp32")
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"weight_layout must be one of {WEIGHT_LAYOUTS}, got {weight_layout!r}")
    on_cpu = torch.device(device).type == "cpu"
    if weight_layout == "onednn" and not (on_cpu and resolved != "bf16" and onednn_available()):
        raise ValueError(f"weight_layout='onednn' runs fp32 layers on CPUs with oneDNN; this is {resolved} on {device}")
    if resolved == "bf16" and on_cpu:
        raise ValueError("bf16 is a GPU mode here (its answers have not passed the accuracy gate on a CPU); "
                         "use fp32 or fp16w")
    if resolved in ("fp16w", "int8") and not supported(resolved, device):
        raise ValueError(f"precision {resolved} runs on CPUs (fp16w needs fbgemm, i.e. x86); "
                         f"use bf16 or fp32 on {device}")
    model.inference_precision = resolved
    if resolved == "bf16":
        model.to(dtype=torch.bfloat16)
    elif resolved in ("fp16w", "int8"):
        replace_linears(model.language_model, Fp16WeightLinear if resolved == "fp16w" else Int8WeightLinear)
    model.weight_layout = "row"
    if on_cpu and weight_layout != "row" and resolved != "bf16":
        shapes = linear_shapes(model, fp32_only=True)
        mix = tuple(sorted((shape, shapes.count(shape)) for shape in set(shapes)))
        if weight_layout == "onednn" or (
                onednn_available() and _fp32_bytes(shapes) >= LAYOUT_MIN_BYTES
                and onednn_speedup(mix) >= 1.1):
            replace_linears(model, OneDnnLinear, fp32_only=True)
            model.weight_layout = "onednn"
    log.info("precision %s; remaining fp32 linear layers: %s", resolved, model.weight_layout)
    return model


@torch.no_grad()
def replace_linears(module: nn.Module, kind, fp32_only: bool = False) -> nn.Module:
    """Swap every nn.Linear under `module` (with `fp32_only`, every fp32 one) for `kind(linear)`, one at a
    time (the float weight is freed as it goes unless another module, such as a tied input embedding,
    still holds it)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and (not fp32_only or child.weight.dtype == torch.float32):
                setattr(parent, name, kind(child))
                del child
                _return_freed_memory()
    return module


class Fp16WeightLinear(nn.Module):
    """nn.Linear with fp16 weights packed for fbgemm's fp16 GEMM; inputs, outputs and accumulation fp32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [out, in], fp32 scales [out]): symmetric, one scale per output channel (its largest |w| /
    127), so that int8 * scale reproduces each weight within half a step."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


class Int8WeightLinear(nn.Module):
    """nn.Linear with per-output-channel int8 weights; inputs, outputs and accumulation in the input's
    float type."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scales = quantize_int8_per_channel(linear.weight)
        self.register_buffer("weight_int8", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= INT8_PACKED_ROWS:
            out = torch._weight_int8pack_mm(rows.contiguous(), self.weight_int8, self.scales.to(x.dtype))
        else:
            out = F.linear(rows, self.weight_int8.to(x.dtype) * self.scales.to(x.dtype)[:, None])
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def _linear_bytes(module: nn.Module) -> int:
    """Bytes of the distinct nn.Linear weights of `module` in fp32."""
    return _fp32_bytes(linear_shapes(module))


def _fp32_bytes(shapes: list[tuple[int, int]]) -> int:
    return sum(4 * o * i for o, i in shapes)


def linear_shapes(module: nn.Module, fp32_only: bool = False) -> list[tuple[int, int]]:
    """(out_features, in_features) of every distinct nn.Linear weight (a tied weight counts once), with
    `fp32_only` of the fp32 ones."""
    seen, shapes = set(), []
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and id(sub.weight) not in seen:
            if fp32_only and sub.weight.dtype != torch.float32:
                continue
            seen.add(id(sub.weight))
            shapes.append(tuple(sub.weight.shape))
    return shapes


def onednn_available() -> bool:
    """Whether this torch build can run linear layers through oneDNN from a reordered weight."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class OneDnnLinear(nn.Module):
    """nn.Linear for fp32 CPU inference, run by oneDNN from a weight reordered once into its blocked
    layout. The math is F.linear's (fp32 inputs, products and sums; only the order of the sums differs).
    Written against torch's mkldnn linear ops, the ones torch.compile's CPU backend uses for frozen
    linear weights, because eager PyTorch has no public call that keeps a weight in oneDNN's layout
    (torch.utils.mkldnn converts the activations on every call and ran about 1.5x slower). Inference
    only: the reordered weight has no gradient and is not in the state dict."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), ONEDNN_BATCH_HINT)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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
def onednn_speedup(mix: tuple[tuple[tuple[int, int], int], ...], probe_bytes: int = 64 * 2**20,
                   rows: tuple[int, ...] = (1, 64)) -> float:
    """How much faster passes over a model's linear weights run through oneDNN (`OneDnnLinear`) than through
    F.linear on the running CPU (>1: oneDNN is faster), summed over a 1-row pass (decoding) and a 64-row
    pass (prefill and vision). `mix` is ((out, in), how many) per weight shape. Times about `probe_bytes` of
    constant weights per kind, shared between the shapes as in the model, so they do not stay in the CPU
    caches; the two kinds take turns, so a change in the machine's load meets both."""
    total = sum(n * o * i for (o, i), n in mix)
    shapes = [(o, i, max(1, round(probe_bytes * n / total / (4 * o * i)))) for (o, i), n in mix]
    plain = []
    for o, i, count in shapes:
        for _ in range(count):
            layer = nn.Linear(i, o, bias=False).requires_grad_(False)
            layer.weight.fill_(0.5)
            plain.append(layer)
    layers = {False: plain, True: [OneDnnLinear(layer) for layer in plain]}
    inputs = {n: [torch.full((n, layer.in_features), 0.5) for layer in plain] for n in rows}

    def one_pass(onednn: bool, n: int) -> float:
        start = time.perf_counter()
        for layer, x in zip(layers[onednn], inputs[n]):
            layer(x)
        return time.perf_counter() - start

    best = {(kind, n): float("inf") for kind in (False, True) for n in rows}
    for _ in range(4):  # the first round warms up both kinds
        for kind, n in best:
            best[kind, n] = min(best[kind, n], one_pass(kind, n))
    return sum(best[False, n] for n in rows) / sum(best[True, n] for n in rows)
