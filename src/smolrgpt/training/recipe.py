"""The training recipe of one curriculum stage: what trains, at which learning rate, on which schedule,
and how the loss is counted.

- Freezing follows `modeling.stages.TRAINABLE_MODULES` (the paper never trains the vision encoder); a
  positive `optim.lr.vision_tower` adds the encoder, for models whose encoder starts from random weights.
- Parameter groups: one per trained module and per decay kind; the learning rate comes from the module's
  family (`modeling.stages.MODULE_FAMILY`, the families named in modeling/families.py). AdamW decays matrices only: biases and norm weights
  (every parameter with fewer than 2 dimensions) get weight decay 0, as decaying a LayerNorm's scale
  toward 0 only fights the normalisation.
- Schedule: linear warm-up over `warmup_ratio` of the steps, then cosine decay that reaches
  `min_lr_ratio` of each group's own peak on the last step (one LambdaLR factor shared by all groups).
- Loss: summed cross-entropy over answer tokens divided by the answer tokens of the WHOLE effective
  batch (all accumulation steps and all processes), so the gradient is that of one big batch, whatever
  the split. A mean of per-micro-batch means would weight a token of a short answer more than one of a
  long answer and would change with the micro-batch size.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smolrgpt.errors import ConfigError
from smolrgpt.modeling.stages import ENCODER, MODULE_FAMILY, TRAINABLE_MODULES, present_modules, set_trainable
from smolrgpt.processing.prompt import IGNORE_INDEX



def trained_modules(model: nn.Module, stage: int, lr=None) -> tuple[str, ...]:
    """The stage's modules that the model has, plus the vision encoder when its family's rate
    (`lr.vision_tower`) is positive."""
    names = present_modules(model, TRAINABLE_MODULES[stage])
    if lr is not None and getattr(lr, MODULE_FAMILY[ENCODER], 0.0) > 0:
        names = (ENCODER,) + names
    return names


def freeze_for_stage(model: nn.Module, stage: int, lr=None) -> dict[str, int]:
    """Apply the stage's freezing; returns trainable parameters per top-level module."""
    set_trainable(model, stage)
    names = trained_modules(model, stage, lr)
    for name in names:
        getattr(model, name).requires_grad_(True)
    counts = {}
    for name in names:
        unique = {id(p): p for p in getattr(model, name).parameters() if p.requires_grad}
        counts[name] = sum(p.numel() for p in unique.values())
    return counts


def parameter_groups(model: nn.Module, stage: int, lr, weight_decay: float) -> list[dict]:
    """AdamW groups for the stage's trainable modules, each at the rate of its module's family
    (`modeling.stages.MODULE_FAMILY`); `lr` has one rate per family (a `LearningRates`).

    Tied parameters (the LM's embedding and head) appear once. Each group carries a `name` so logs and
    tests can tell them apart.
    """
    seen: set[int] = set()
    groups = []
    for module_name in trained_modules(model, stage, lr):
        family = MODULE_FAMILY[module_name]
        peak = float(getattr(lr, family))
        decay, no_decay = [], []
        for _, p in getattr(model, module_name).named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 else no_decay).append(p)
        for kind, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                groups.append({"name": f"{module_name}/{kind}", "family": family, "params": params,
                               "lr": peak, "weight_decay": wd})
    if not groups:
        raise ConfigError(f"stage {stage} has no trainable parameters")
    return groups


def build_optimizer(model: nn.Module, stage: int, optim) -> torch.optim.AdamW:
    groups = parameter_groups(model, stage, optim.lr, optim.weight_decay)
    # foreach=False keeps the update arithmetic identical whatever the device and group sizes.
    return torch.optim.AdamW(groups, betas=(optim.beta1, optim.beta2), eps=optim.eps, foreach=False)


@dataclass(frozen=True)
class WarmupCosine:
    """lr factor for optimizer step `step` (0-based: the factor used by the step-th update).

    Warm-up: (step + 1) / W for step < W, so the first update already moves (a factor of 0 would waste
    it) and step W - 1 runs at the peak. Then cosine from 1 at step W to `min_ratio` at the last step.
    A plain class (not a lambda) so the scheduler's state_dict stays plain data.
    """

    total_steps: int
    warmup_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(warmup_ratio * total_steps) if warmup_ratio > 0 else 0


def build_scheduler(optimizer, total_steps: int, warmup_ratio: float, min_ratio: float):
    factor = WarmupCosine(total_steps, warmup_steps_for(total_steps, warmup_ratio), min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute decoder-layer activations in the backward pass (less memory, about a third more compute)."""
    kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs and under DDP/FSDP
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# --------------------------------------------------------------------------- precision
def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_precision(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. bf16 only on CUDA devices that support it: CPUs
    without bf16 instructions run it 5-70x slower than fp32."""
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if choice == "bf16":
        if not bf16_ok:
            raise ConfigError(f"train.precision=bf16 needs a CUDA device with bf16 support (device: {device}); "
                              "use precision=auto or fp32")
        return torch.bfloat16
    if choice == "auto" and bf16_ok:
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- loss
def answer_token_count(labels: torch.Tensor) -> int:
    """Tokens that carry loss after the causal shift (labels[:, 1:])."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def summed_token_loss(model: nn.Module, batch: dict, device: torch.device,
                      dtype: torch.dtype | None) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over the answer tokens of one micro-batch."""
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}
    labels = batch["labels"].to(device, non_blocking=True)
    with autocast(device, dtype):
        logits = model(**inputs).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def current_lrs(optimizer) -> dict[str, float]:
    """Learning rate per module family (the decay and no-decay halves share it)."""
    out: dict[str, float] = {}
    for group in optimizer.param_groups:
        out.setdefault(group.get("family", group.get("name", "group")), group["lr"])
    return out
