"""Which modules train in each curriculum stage (spec section 2), and parameter counting."""
from __future__ import annotations

from torch import nn

from smolrgpt.modeling.extensions import trainable_extensions

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
TOP_LEVEL_MODULES = _with_extensions(("vision_tower",) + PAPER_MODULES[3], trainable_extensions())
# Which learning rate (optim.lr.<family>) each trainable module uses.
MODULE_FAMILY = {
    "rgb_connector": "connectors",
    "depth_connector": "connectors",
    "rgb_refiner": "refiners",
    "depth_refiner": "refiners",
    "language_model": "language_model",
    "vision_tower": "vision_tower",
    **trainable_extensions(),  # each region extension declares its own family
}


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
