"""Region extensions: optional steps between mask pooling and splicing (not in the paper's architecture).

A model's `config.region_extensions` names the ones it has; `SmolRGPTForConditionalGeneration` builds them
from this registry by name and applies them in the registry's order, whatever the order of the list.
To add one: subclass `RegionExtension` in a module of this folder and list its class here."""
from __future__ import annotations

from smolrgpt.modeling.extensions.base import RegionExtension
from smolrgpt.modeling.extensions.comparisons import RegionComparisons
from smolrgpt.modeling.extensions.contents import RegionContents
from smolrgpt.modeling.extensions.geometry import RegionGeometry

# Application order: contents first, so a buffer's comparison message can carry what stands in it; the
# geometry code last, on the finished vectors.
EXTENSIONS: dict[str, type[RegionExtension]] = {cls.name: cls for cls in (RegionContents, RegionComparisons,
                                                                        RegionGeometry)}


def extension_names(names) -> list[str]:
    """`names` checked against the registry and put in its order (ValueError naming an unknown one)."""
    names = list(names or ())
    unknown = [name for name in names if name not in EXTENSIONS]
    if unknown:
        raise ValueError(f"unknown region extension {unknown[0]!r}; choose among {', '.join(EXTENSIONS)}")
    return [name for name in EXTENSIONS if name in names]


def build_extensions(config) -> list[RegionExtension]:
    return [EXTENSIONS[name].for_model(config) for name in extension_names(config.region_extensions)]


def trainable_extensions(stage: int | None = None) -> dict[str, str]:
    """attribute -> learning-rate family of the extensions that train (in `stage`, when given)."""
    return {cls.attribute: cls.family for cls in EXTENSIONS.values()
            if cls.family is not None and (stage is None or stage in cls.stages)}


__all__ = ["EXTENSIONS", "RegionExtension", "build_extensions", "extension_names", "trainable_extensions"]
