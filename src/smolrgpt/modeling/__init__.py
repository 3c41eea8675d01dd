"""The SmolRGPT model: configuration, modules, checkpoints and inference precision.

Names are imported on first use (PEP 562), so a module that needs only a light part of this package
(`modeling.families`, `modeling.config`) does not pay for importing the model and torch.
"""
import importlib

_EXPORTS = {"PRESETS": "config", "SmolRGPTConfig": "config", "SmolRGPTForConditionalGeneration": "model",
            "FrameFeatures": "model", "InputMismatchError": "model"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"smolrgpt.modeling.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'smolrgpt.modeling' has no attribute {name!r}")
