"""`data.lead_in`: a stage's first steps draw from their own category mix, then the main mix starts at its
own epoch 0. (Resuming across the boundary is in test_training_resume.py.)"""
from __future__ import annotations

import pytest

from smolrgpt.errors import ConfigError
from smolrgpt.training.config import load_config
from smolrgpt.training.trainer import Trainer
from training_helpers import DEMO_CONFIGS, quick_overrides, write_track3_set

TRAINING_BATCHES = Trainer.training_batches
EACH_ONCE = {f"data__category_repeats__{c}": 1.0 for c in ("left_right", "count", "distance", "mcq")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_track3_set(tmp_path_factory.mktemp("lead_in"), {"train": 8, "val": 1})


def trained_step_categories(data, out, monkeypatch, **extra) -> list[list[str]]:
    """Train on the fixture set; the categories of each optimizer step's samples, in order."""
    seen = []
    original = TRAINING_BATCHES

    def recording(self, steps, num_workers):
        seen.extend([self.train_samples[i].category for i in step] for step in steps)
        return original(self, steps, num_workers)

    monkeypatch.setattr(Trainer, "training_batches", recording)
    config = load_config(DEMO_CONFIGS / "stage3.yaml", quick_overrides(data, out, **EACH_ONCE, **extra))
    summary = Trainer(config).fit()
    assert summary["steps"] == len(seen)
    return seen


def test_lead_in_steps_hold_only_its_categories_then_the_main_mix_starts_afresh(data, tmp_path, monkeypatch):
    plain = trained_step_categories(data, tmp_path / "plain", monkeypatch, schedule__max_steps=7,
                                    data__lead_in__share=0.0, data__lead_in__min_steps=0)
    led = trained_step_categories(data, tmp_path / "led", monkeypatch, schedule__max_steps=10,
                                  data__lead_in__share=0.3, data__lead_in__min_steps=0,
                                  data__lead_in__repeats__left_right=1.0)
    assert len(led) == 10
    # 8 left/right questions, 4 per step: the 3 lead-in steps run into a second lead-in epoch
    assert all(set(step) == {"left_right"} for step in led[:3])
    assert led[3:] == plain  # the main mix from its epoch 0, as if there had been no lead-in
    assert {c for step in plain for c in step} == {"left_right", "count", "distance", "mcq"}


def test_lead_in_settings_are_checked(data, tmp_path):
    def config(*overrides):
        return load_config(DEMO_CONFIGS / "stage3.yaml", quick_overrides(data, tmp_path, **EACH_ONCE) + list(overrides))

    repeats = config("data.lead_in.share=0.2", "data.lead_in.repeats.mcq=2").data.lead_in.repeats
    assert (repeats.left_right, repeats.count, repeats.distance, repeats.mcq) == (1.0, 0.0, 0.0, 2.0)  # unnamed: 0
    with pytest.raises(ConfigError, match=r"data\.lead_in\.share must be in \[0, 1\)"):
        config("data.lead_in.share=1")
    with pytest.raises(ConfigError, match=r"data\.lead_in\.share must be <= data\.lead_in\.max_share"):
        config("data.lead_in.share=0.6")
    with pytest.raises(ConfigError, match=r"data\.lead_in\.max_share must be in \(0, 1\)"):
        config("data.lead_in.max_share=1")
    with pytest.raises(ConfigError, match=r"data\.lead_in\.min_steps must be >= 0"):
        config("data.lead_in.min_steps=-5")
    with pytest.raises(ConfigError, match="data.lead_in is set but data.lead_in.repeats gives every category 0"):
        config("data.lead_in.share=0", "data.lead_in.min_steps=3", "data.lead_in.repeats.left_right=0",
               "data.lead_in.repeats.count=0", "data.lead_in.repeats.distance=0", "data.lead_in.repeats.mcq=0")
    with pytest.raises(ConfigError, match=r"data\.lead_in\.repeats\.\* must be finite and >= 0"):
        config("data.lead_in.repeats.count=-1")
    with pytest.raises(ConfigError, match=r"unknown setting data\.lead_in\.repeats\.leftright"):
        config("data.lead_in.repeats.leftright=1")


def test_a_lead_in_category_absent_from_the_data_is_an_error(tmp_path):
    from conftest import make_sample
    from smolrgpt.training.config import LeadInRepeats
    from smolrgpt.training.data import sample_repeats

    samples = [make_sample(f"s{i}") for i in range(4)]
    for sample, category in zip(samples, ["count", "count", "mcq", None]):
        sample.category = category
    assert sample_repeats(samples, LeadInRepeats(count=2.0), default=0.0).tolist() == [2.0, 2.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match=r"data\.lead_in\.repeats sets left_right, but no training sample has that "
                                          r"category \(categories present: \['count', 'mcq'\]\)"):
        sample_repeats(samples, LeadInRepeats(left_right=1.0), default=0.0, name="data.lead_in.repeats")


def test_step_timing_gives_the_lead_in_its_share_of_the_timed_steps(data, tmp_path, monkeypatch):
    from smolrgpt.training.trainer import seconds_per_step

    seen = []

    def recording(self, steps, num_workers):
        seen.append([sorted(self.train_samples[i].category for i in step) for step in steps])
        return TRAINING_BATCHES(self, steps, num_workers)

    monkeypatch.setattr(Trainer, "training_batches", recording)
    for share in (0.0, 0.25):
        config = load_config(DEMO_CONFIGS / "stage3.yaml", quick_overrides(
            data, tmp_path / str(share), **EACH_ONCE, data__lead_in__share=share, data__lead_in__min_steps=0,
            data__lead_in__repeats__left_right=1))
        assert seconds_per_step(config, steps=6, warmup=2) > 0
    plain, led = seen
    assert len(plain) == len(led) == 8
    # 2 warm-up steps, then every fourth timed step from the lead-in (left/right only), the rest as before
    assert led[5] == ["left_right"] * 4 and led[:5] == plain[:5] and led[6:] == plain[5:7]
