"""Which modules train in each curriculum stage (spec section 2), and parameter counting."""
from __future__ import annotations

from torch import nn

from smolrgpt.modeling.extensions import trainable_extensions
from smolrgpt.modeling.families import LR_FAMILIES, PAPER_MODULE_FAMILY

# Stage 1 aligns the RGB connector; stage 2 warms up both connectors and refiners with the LM frozen;
# stage 3 trains everything except the shared vision encoder. Region extensions (modeling/extensions/)
# declare their own stages and come before the language model; a model without one simply has none
# (see `present_modules`).
PAPER_MODULES = {
    1: ("rgb_connector",),
    2: ("rgb_connector", "depth_connector", "rgb_refiner", "depth_refiner"),
    3: ("rgb_connector", "depth_connector", "rgb_refiner", "depth_refiner", "language_model"),
}


def _with_extensions(names: tuple[str, ...], extensions) -> tuple[str, ...]:
    core = tuple(name for name in names if name != "language_model")
    return core + tuple(extensions) + (("language_model",) if "language_model" in names else ())


TRAINABLE_MODULES = {stage: _with_extensions(names, trainable_extensions(stage))
                     for stage, names in PAPER_MODULES.items()}
# The shared encoder: it trains only at a positive rate of its family (training.recipe.trained_modules).
ENCODER = "vision_tower"
TOP_LEVEL_MODULES = _with_extensions((ENCODER,) + PAPER_MODULES[3], trainable_extensions())
# Which learning rate (optim.lr.<family>) each trainable module uses: the paper modules' families
# (modeling/families.py), then each region extension's own.
MODULE_FAMILY = {**PAPER_MODULE_FAMILY, **trainable_extensions()}


def family_defaults(module_family: dict[str, str]) -> dict[str, float]:
    """family -> default peak rate for the families that some module of `module_family` uses, in the
    table's order: the keys of `optim.lr`. A family outside the table is an error naming its module."""
    for module, family in module_family.items():
        if family not in LR_FAMILIES:
            raise ValueError(f"module {module} trains at learning-rate family {family!r}, which is not one of "
                             f"{', '.join(LR_FAMILIES)} (modeling/families.py)")
    used = set(module_family.values())
    return {family: entry.default_lr for family, entry in LR_FAMILIES.items() if family in used}


FAMILY_DEFAULT_LR = family_defaults(MODULE_FAMILY)


def present_modules(model: nn.Module, names) -> tuple[str, ...]:
    """The names among `names` that the model has (optional modules are None when their option is off)."""
    return tuple(name for name in names if getattr(model, name, None) is not None)


def count_parameters(module: nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def parameter_summary(model: nn.Module) -> dict:
    modules = {name: count_parameters(getattr(model, name)) for name in present_modules(model, TOP_LEVEL_MODULES)}
    return {
        "total_params": count_parameters(model),
        "modules": modules,
        "trainable_params_by_stage": {
            str(stage): sum(modules[name] for name in present_modules(model, names))
            for stage, names in TRAINABLE_MODULES.items()
        },
    }


def set_trainable(model: nn.Module, stage: int) -> None:
    """Freeze everything, then unfreeze the stage's modules."""
    if stage not in TRAINABLE_MODULES:
        raise ValueError(f"stage must be one of {sorted(TRAINABLE_MODULES)}, got {stage}")
    model.requires_grad_(False)
    for name in present_modules(model, TRAINABLE_MODULES[stage]):
        getattr(model, name).requires_grad_(True)
