"""The recipe: freezing and parameter groups per stage, the LR schedule, token-weighted loss, precision."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import make_sample
from smolrgpt.errors import ConfigError
from smolrgpt.modeling.stages import MODULE_FAMILY, TRAINABLE_MODULES
from smolrgpt.training import recipe
from smolrgpt.training.config import LearningRates, OptimSection


def _lrs(total, warmup_ratio=0.03, min_ratio=0.1, peaks=(1e-4, 5e-5)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in peaks]
    opt = torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, peaks)])
    sched = recipe.build_scheduler(opt, total, warmup_ratio, min_ratio)
    out = []
    for _ in range(total):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_schedule_values_at_known_steps():
    lrs = _lrs(100)  # 3% of 100 steps = 3 warm-up steps
    peak = 1e-4
    assert [round(x[0] / peak, 12) for x in lrs[:4]] == [round(1 / 3, 12), round(2 / 3, 12), 1.0, 1.0]
    # cosine from step 3 (factor 1) to step 99 (factor 0.1): halfway at step 51
    assert lrs[51][0] == pytest.approx(peak * 0.55, rel=1e-12)
    assert lrs[99][0] == pytest.approx(peak * 0.1, rel=1e-12)
    assert lrs[99][1] == pytest.approx(5e-5 * 0.1, rel=1e-12)  # each group decays to 10% of its own peak
    f = recipe.WarmupCosine(100, 3, 0.1)
    assert f(27) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 24 / 96)), rel=1e-15)
    assert all(a[0] >= b[0] for a, b in zip(lrs[2:], lrs[3:]))  # monotone after warm-up


def test_schedule_without_warmup_and_tiny_runs():
    assert _lrs(1, warmup_ratio=0.0)[0][0] == pytest.approx(1e-4)
    three = _lrs(3, warmup_ratio=0.03)  # ceil(0.09) = 1 warm-up step, then cosine from 1 to 0.1
    assert [x[0] for x in three] == pytest.approx([1e-4, 1e-4, 1e-5], rel=1e-12)
    assert recipe.warmup_steps_for(1000, 0.03) == 30


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_parameter_groups_and_frozen_modules(tiny_model, stage):
    counts = recipe.freeze_for_stage(tiny_model, stage)
    assert set(counts) == set(TRAINABLE_MODULES[stage])
    # both region layers are on in the tiny preset, so every module name is covered
    assert tiny_model.region_contents is not None and tiny_model.region_comparisons is not None
    assert not any(p.requires_grad for p in tiny_model.vision_tower.parameters())
    for name in ("rgb_connector", "depth_connector", "rgb_refiner", "depth_refiner", "region_contents",
                 "region_comparisons", "language_model"):
        trains = any(p.requires_grad for p in getattr(tiny_model, name).parameters())
        assert trains == (name in TRAINABLE_MODULES[stage])
    lr = LearningRates(connectors=1e-4, refiners=2e-4, language_model=3e-5)
    opt = recipe.build_optimizer(tiny_model, stage, OptimSection(lr=lr, weight_decay=0.01))
    family_lr = {"connectors": 1e-4, "refiners": 2e-4, "language_model": 3e-5}
    seen = set()
    for group in opt.param_groups:
        module, kind = group["name"].split("/")
        assert group["lr"] == family_lr[MODULE_FAMILY[module]]
        for p in group["params"]:
            assert id(p) not in seen and p.requires_grad
            seen.add(id(p))
            # no weight decay on biases and norm weights (1-D), 0.01 on matrices
            assert (kind == "no_decay") == (p.dim() < 2)
            assert group["weight_decay"] == (0.0 if p.dim() < 2 else 0.01)
    trainable = {id(p) for p in tiny_model.parameters() if p.requires_grad}
    assert seen == trainable  # tied embedding/head counted once, nothing missing
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(counts.values())


def test_loss_is_averaged_over_answer_tokens_of_the_whole_batch(tiny_model, tiny_processor):
    """Summed token loss / all answer tokens, over micro-batches of any split, equals the big-batch
    per-token mean, and so do the gradients (not a mean of per-micro-batch means)."""
    answers = ["The pallet [Region 0] is 3.25 meters from the pallet [Region 1].", "Nine meters.",
               "They are 9.81 meters apart from each other, so the distance is 9.81 meters.", "1.64 m"]
    prepared = [tiny_processor.prepare(make_sample(f"s{i}", seed=i, answer=a)) for i, a in enumerate(answers)]
    recipe.freeze_for_stage(tiny_model, 3)
    tiny_model.train()
    device = torch.device("cpu")

    full = tiny_processor.collate(prepared, "right")
    reference = tiny_model(**full).loss  # transformers' mean over the batch's answer tokens
    reference.backward()
    ref_grads = [p.grad.clone() for p in tiny_model.parameters() if p.requires_grad]
    tiny_model.zero_grad()

    micro = [tiny_processor.collate(prepared[:1], "right"), tiny_processor.collate(prepared[1:], "right")]
    tokens = sum(recipe.answer_token_count(b["labels"]) for b in micro)
    total = 0.0
    for b in micro:
        summed = recipe.summed_token_loss(tiny_model, b, device, None)
        (summed / tokens).backward()
        total += float(summed.detach())
    assert total / tokens == pytest.approx(float(reference.detach()), rel=1e-5)
    for g, r in zip((p.grad for p in tiny_model.parameters() if p.requires_grad), ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        mean_of_means = sum(float(recipe.summed_token_loss(tiny_model, b, device, None)) /
                            recipe.answer_token_count(b["labels"]) for b in micro) / 2
    assert abs(mean_of_means - float(reference.detach())) > 1e-4  # the naive average really is different


def test_precision_never_bf16_on_cpu():
    cpu = torch.device("cpu")
    assert recipe.resolve_precision("auto", cpu) is None
    assert recipe.resolve_precision("fp32", cpu) is None
    with pytest.raises(ConfigError, match="bf16 needs a CUDA device"):
        recipe.resolve_precision("bf16", cpu)
    assert recipe.resolve_device("cpu") == cpu


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, tiny_processor):
    batch = tiny_processor.collate([tiny_processor.prepare(make_sample(f"s{i}", seed=i)) for i in range(2)], "right")
    recipe.freeze_for_stage(tiny_model, 3)
    tiny_model.train()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            recipe.enable_activation_checkpointing(tiny_model)
        tiny_model.zero_grad()
        recipe.summed_token_loss(tiny_model, batch, torch.device("cpu"), None).backward()
        grads.append([p.grad.clone() for p in tiny_model.parameters() if p.requires_grad])
    assert tiny_model.language_model.model.gradient_checkpointing
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_positive_vision_lr_trains_the_encoder_in_its_own_group(tiny_model):
    lr = LearningRates(connectors=1e-4, refiners=2e-4, language_model=3e-5, vision_tower=7e-4)
    counts = recipe.freeze_for_stage(tiny_model, 2, lr)
    assert set(counts) == {"vision_tower", *TRAINABLE_MODULES[2]}
    assert all(p.requires_grad for p in tiny_model.vision_tower.parameters())
    assert not any(p.requires_grad for p in tiny_model.language_model.parameters())
    opt = recipe.build_optimizer(tiny_model, 2, OptimSection(lr=lr))
    vision = [g for g in opt.param_groups if g["name"].startswith("vision_tower/")]
    assert {g["lr"] for g in vision} == {7e-4}
    assert sum(p.numel() for g in vision for p in g["params"]) == counts["vision_tower"]
    # the default (0) keeps the paper's frozen encoder
    assert "vision_tower" not in recipe.freeze_for_stage(tiny_model, 3, LearningRates())
