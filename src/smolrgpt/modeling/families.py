"""The learning-rate families, named once: a trainable module trains at its family's peak rate,
`optim.lr.<family>` in a training config. `training.config.LearningRates` is built from this table (one
field per family, these defaults), `modeling.stages.MODULE_FAMILY` adds the region extensions' own
families to the paper modules', and the recipe's parameter groups look rates up through it."""
from __future__ import annotations

from typing import NamedTuple


class LRFamily(NamedTuple):
    default_lr: float  # the default peak rate
    modules: tuple[str, ...]  # the paper's modules that train at it (region extensions declare theirs)


LR_FAMILIES: dict[str, LRFamily] = {
    "connectors": LRFamily(1e-4, ("rgb_connector", "depth_connector")),
    "refiners": LRFamily(1e-4, ("rgb_refiner", "depth_refiner")),
    "language_model": LRFamily(5e-5, ("language_model",)),
    # 0 keeps the encoder frozen (the paper); > 0 trains it in every stage
    "vision_tower": LRFamily(0.0, ("vision_tower",)),
}

# paper module -> its family
PAPER_MODULE_FAMILY = {module: family for family, entry in LR_FAMILIES.items() for module in entry.modules}
