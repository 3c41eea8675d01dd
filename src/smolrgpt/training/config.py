"""Training configuration: a YAML file plus `key=value` overrides, validated into nested dataclasses.

Every key is checked against the dataclasses below, so a typo is an error naming the key instead of a
setting that silently does nothing. Values are converted by the field's declared type; booleans accept
true/false/yes/no/on/off/1/0 (never Python's `bool("False") == True`). A value of `???` marks a setting
the user must supply (data paths), and `null` / `none` clears an optional one.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from smolrgpt.errors import ConfigError
from smolrgpt.modeling.stages import FAMILY_DEFAULT_LR

REQUIRED = "???"
_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


@dataclass
class ModelSection:
    # "preset:NAME" (random or backbone-initialised, see vision/language) or a SmolRGPT checkpoint folder.
    init: str = "preset:smolrgpt-tiny"
    vision: str | None = None  # pretrained SigLIP/SigLIP2 (folder or hub id); only with a preset init
    language: str | None = None  # pretrained Llama LM (folder, hub id, .gguf, or smollm2-offline)
    tokenizer: str | None = None
    gradient_checkpointing: bool = False


@dataclass
class CategoryRepeats:
    """How many times per epoch a training question of each Track 3 category is used. A fraction draws
    that share of the category's questions anew each epoch (0.5: half of them, 1.5: all once and half
    twice). Questions without a category (other formats) are used once."""
    left_right: float = 1.0
    count: float = 1.0
    distance: float = 1.0
    mcq: float = 1.0


@dataclass
class LeadInRepeats:
    """`category_repeats` of the lead-in: a category not named is left out (0), not used once."""
    left_right: float = 0.0
    count: float = 0.0
    distance: float = 0.0
    mcq: float = 0.0


@dataclass
class LeadIn:
    """The first `share` of a stage's optimizer steps (but at least `min_steps`, and never more than
    `max_share`) draw from their own category mix (`repeats`), then the main mix takes over; one
    learning-rate schedule spans both. Why: a from-scratch language model learns left/right alone in
    about 500 steps, but in the full mix only at a run-dependent point or not at all (docs/research.md, "Lead-in");
    a short budget's fifth is too few steps for it."""
    share: float = 0.0
    min_steps: int = 0
    max_share: float = 0.5
    repeats: LeadInRepeats = field(default_factory=LeadInRepeats)

    def steps(self, total_steps: int) -> int:
        if self.share == 0 and self.min_steps == 0:
            return 0
        wanted = max(round(self.share * total_steps), self.min_steps)
        return max(1, min(wanted, math.floor(self.max_share * total_steps)))


@dataclass
class DataSection:
    train: str = REQUIRED
    val: str | None = None
    format: str = "auto"
    images_root: str | None = None
    depths_root: str | None = None
    val_images_root: str | None = None
    val_depths_root: str | None = None
    # Preprocessing caches written by `smolrgpt data prepare FILE --out DIR` (frames resized once, masks
    # pooled once); refused when stale or corrupt.
    train_cache: str | None = None
    val_cache: str | None = None
    # Without a `val` file, this share of the training FRAMES is held out (whole frames, never single
    # questions, so no frame is seen by both sides).
    val_fraction: float = 0.0
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    max_length: int = 512
    # Drop (and count) samples that cannot be trained on (longer than max_length, tags != masks) instead
    # of stopping at the first one.
    skip_invalid: bool = False
    group_by_length: bool = True
    mega_batch_steps: int = 16  # length-grouping window, in optimizer steps
    # Up to this many questions about one frame go next to each other in a batch and share one encoder,
    # connector and refiner pass (the frame's questions differ; its pixels and features do not). 1: each
    # question is placed on its own.
    frame_group: int = 1
    category_repeats: CategoryRepeats = field(default_factory=CategoryRepeats)
    lead_in: LeadIn = field(default_factory=LeadIn)
    # What the model learns to answer: the records' conversation text, or the short text that the answer
    # normaliser reads as their `normalized_answer` ("4", "5.59", region "1", or a side word about the
    # question's subject: "right" to "On which side of A does B appear?" when A is left of B). `reasoned`:
    # the same, but a count answer first names the buffer and lists its pallets, taken from the record's
    # own answer ("[Region 0]: [Region 3] [Region 9], 2 pallets"; see `reasoned_count_answer`).
    answer_target: Literal["conversation", "normalized", "reasoned"] = "conversation"
    num_workers: int = 0


# Peak learning rate per family, `optim.lr.<family>`: one float field per family that some trainable module
# uses, with the default of modeling/families.py (vision_tower 0 keeps the encoder frozen, as in the paper;
# > 0 trains it in every stage). Built from the table so a family is named in one place only.
LearningRates = dataclasses.make_dataclass(
    "LearningRates", [(family, float, field(default=rate)) for family, rate in FAMILY_DEFAULT_LR.items()])
LearningRates.__module__ = __name__  # where pickle finds it (make_dataclass takes `module` from 3.12 only)
LearningRates.__doc__ = "Peak learning rate per family (optim.lr.<family>; see modeling/families.py)."


@dataclass
class OptimSection:
    lr: LearningRates = field(default_factory=LearningRates)
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0


@dataclass
class ScheduleSection:
    epochs: float = 1.0
    max_steps: int | None = None  # a cap on optimizer steps (the schedule is laid out over the capped total)
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1


@dataclass
class TrainSection:
    stage: int = 3
    batch_size: int = 112  # effective: micro-batch x grad_accum x processes
    grad_accum: int = 4
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: Literal["ddp", "fsdp"] = "ddp"
    # DDP: null = only when some trainable module can go unused (stage >= 2 with samples lacking regions,
    # whose micro-batch then never reaches the depth connector and the refiners).
    find_unused_parameters: bool | None = None
    output_dir: str = "runs/stage3"
    eval_every: int = 500  # optimizer steps; 0 = only at the end
    eval_batch_size: int = 8
    accuracy_samples: int = 0  # stage 3: Track 3 accuracy on this many validation questions
    max_new_tokens: int = 48
    num_threads: int | None = None


@dataclass
class CheckpointSection:
    save_every: int = 500  # optimizer steps between `last` checkpoints (and always at the end)
    save_best: bool = True
    resume: bool = False


@dataclass
class LoggingSection:
    progress: bool = True
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "smolrgpt"
    wandb_run_name: str | None = None
    plot: bool = True


class SettingsFile:
    """What a settings dataclass saved next to a run's outputs needs: a plain dict and its YAML."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclass
class TrainingConfig(SettingsFile):
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)


# --------------------------------------------------------------------------- value conversion
def parse_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{key}: expected a boolean (true/false, yes/no, on/off, 1/0), got {value!r}")


def _is_none_text(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~"))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if _is_none_text(value):
            return None
        return _coerce(value, options[0], key)
    if origin is Literal:
        choices = typing.get_args(tp)
        text = str(value).strip() if value is not None else value
        if text not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return text
    if value is None:
        raise ConfigError(f"{key}: a value is required (it cannot be null)")
    if tp is bool:
        return parse_bool(value, key)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            # YAML 1.1 reads `1e-4` (no dot) as a string: numbers written as text are accepted.
            number = float(value if isinstance(value, (int, float)) else str(value).strip())
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected text, got a {type(value).__name__}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover - programming error


def build_dataclass(cls, raw: Any, prefix: str = ""):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]}"
                          f" (known in {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))})")
    values = {}
    for name in names:
        if name not in raw:
            continue
        tp, key = hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            values[name] = build_dataclass(tp, raw[name], key + ".")
        else:
            values[name] = _coerce(raw[name], tp, key)
    return cls(**values)


def _field_type(path: list[str], root=None):
    """The declared type of a dotted key; an error naming the first unknown part."""
    cls, prefix, tp = root or TrainingConfig, "", None
    for i, part in enumerate(path):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise ConfigError(f"unknown setting {prefix}{part} (known in {prefix.rstrip('.') or 'the top level'}: "
                              f"{', '.join(sorted(hints))})")
        tp, prefix = hints[part], prefix + part + "."
        if i < len(path) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"{prefix.rstrip('.')} is a single setting, not a section")
            cls = tp
    return tp


def apply_override(raw: dict, text: str, root=None) -> None:
    """One `section.key=value` into the raw (not yet validated) settings tree of `root` (a dataclass;
    default TrainingConfig)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override {text!r} has an empty key part")
    if dataclasses.is_dataclass(_field_type(path, root)):
        raise ConfigError(f"{key} is a section; set its keys one by one ({key}.NAME=VALUE)")
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{part} in the config file is not a section")
        node = child
    node[path[-1]] = value


def validate(config: TrainingConfig) -> TrainingConfig:
    for section in dataclasses.fields(config):
        for f in dataclasses.fields(getattr(config, section.name)):
            if getattr(getattr(config, section.name), f.name) == REQUIRED:
                raise ConfigError(f"{section.name}.{f.name} is required: set it on the command line, e.g. "
                                  f"{section.name}.{f.name}=/path/to/file")
    t, s, d, o = config.train, config.schedule, config.data, config.optim
    checks = [
        (t.stage in (1, 2, 3), "train.stage must be 1, 2 or 3"),
        (t.batch_size > 0, "train.batch_size must be positive"),
        (t.grad_accum > 0, "train.grad_accum must be positive"),
        (t.batch_size % t.grad_accum == 0, f"train.batch_size ({t.batch_size}) must be a multiple of "
                                           f"train.grad_accum ({t.grad_accum})"),
        (t.eval_every >= 0, "train.eval_every must be >= 0"),
        (t.eval_batch_size > 0, "train.eval_batch_size must be positive"),
        (t.accuracy_samples >= 0, "train.accuracy_samples must be >= 0"),
        (s.epochs > 0, "schedule.epochs must be positive"),
        (s.max_steps is None or s.max_steps > 0, "schedule.max_steps must be positive (or null)"),
        (0 <= s.warmup_ratio < 1, "schedule.warmup_ratio must be in [0, 1)"),
        (0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio must be in [0, 1]"),
        (0 <= d.val_fraction < 1, "data.val_fraction must be in [0, 1)"),
        (d.max_length > 0, "data.max_length must be positive"),
        (d.mega_batch_steps > 0, "data.mega_batch_steps must be positive"),
        (d.frame_group > 0, "data.frame_group must be positive (1: no grouping)"),
        (d.num_workers >= 0, "data.num_workers must be >= 0"),
        (o.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (o.max_grad_norm >= 0, "optim.max_grad_norm must be >= 0 (0 = no clipping)"),
        (all(v >= 0 for v in dataclasses.asdict(o.lr).values()), "optim.lr.* must be >= 0"),
        (all(math.isfinite(v) and v >= 0 for v in dataclasses.asdict(config.data.category_repeats).values()),
         "data.category_repeats.* must be finite and >= 0"),
        (0 <= d.lead_in.share < 1, "data.lead_in.share must be in [0, 1)"),
        (0 < d.lead_in.max_share < 1, "data.lead_in.max_share must be in (0, 1)"),
        (d.lead_in.share <= d.lead_in.max_share, "data.lead_in.share must be <= data.lead_in.max_share"),
        (d.lead_in.min_steps >= 0, "data.lead_in.min_steps must be >= 0"),
        (all(math.isfinite(v) and v >= 0 for v in dataclasses.asdict(d.lead_in.repeats).values()),
         "data.lead_in.repeats.* must be finite and >= 0"),
        (d.lead_in.steps(1) == 0 or any(dataclasses.asdict(d.lead_in.repeats).values()),
         "data.lead_in is set but data.lead_in.repeats gives every category 0"),
        (config.checkpoint.save_every >= 0, "checkpoint.save_every must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if t.accuracy_samples and t.stage != 3:
        raise ConfigError("train.accuracy_samples is for stage 3 (Track 3 questions); set it to 0")
    return config


def read_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:  # one line: the problem and where (PyYAML's own text spans several)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML: {problem}{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A training config file's settings. A top-level `base: OTHER.yaml` (relative to this file) reads that
    file first and puts this file's settings over it, section by section, so a recipe that differs from
    another in a few keys says only those."""
    path = Path(path)
    raw = read_yaml(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base must be the path of another config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: base {base} leads back to itself")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base} not found ({base_path})")
    return _merged(read_config_file(base_path, (*_seen, path.resolve())), raw)


def config_from_dict(raw: dict, overrides: list[str] = ()) -> TrainingConfig:
    import copy

    raw = copy.deepcopy(raw)
    for text in overrides:
        apply_override(raw, text)
    return validate(build_dataclass(TrainingConfig, raw))


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainingConfig:
    """The resolved, validated config of a YAML file (or the defaults) and `key=value` overrides."""
    return config_from_dict(read_config_file(path) if path is not None else {}, overrides)


def differences(a: TrainingConfig, b: TrainingConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ (used to refuse resuming with a changed recipe)."""

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    fa, fb = dict(flat(a.to_dict())), dict(flat(b.to_dict()))
    return [k for k in fa if fa[k] != fb.get(k) and not any(k.startswith(i) for i in ignore)]
