"""Inference precision per device: fp32, int8 weights (CPU) or bf16 (GPU), chosen automatically.

This CPU class (AVX2, no bf16 instructions) runs bf16 matrix products 5-70x slower than fp32, while
fbgemm's int8 kernels are its fast path; on GPUs bf16 is. `auto` picks int8 on CPU and bf16 on a GPU
that supports it.
"""
from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "int8", "bf16")


def resolve_precision(precision: str, device: str | torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "int8" if device.type == "cpu" else "fp32"


def apply_precision(model: nn.Module, precision: str, device: str | torch.device) -> nn.Module:
    """Convert an eval-mode model in place (returns it). int8 = dynamic quantisation of every Linear
    layer: weights stored as int8 with per-channel scales, activations quantised on the fly."""
    resolved = resolve_precision(precision, device)
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
