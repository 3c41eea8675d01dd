"""SmolRGPT: a compact vision-language model for spatial questions on RGB + depth + region masks.

Names are imported on first use (PEP 562), so `import smolrgpt.evaluation.score` or `smolrgpt --help`
never pay for importing torch.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Region": "smolrgpt.data.sample", "Sample": "smolrgpt.data.sample",
    "load_checkpoint": "smolrgpt.modeling.checkpoint", "save_checkpoint": "smolrgpt.modeling.checkpoint",
    "PRESETS": "smolrgpt.modeling.config", "SmolRGPTConfig": "smolrgpt.modeling.config",
    "FrameFeatures": "smolrgpt.modeling.model", "SmolRGPTForConditionalGeneration": "smolrgpt.modeling.model",
    "SmolRGPTProcessor": "smolrgpt.processing.processor",
    "SmolRGPT": "smolrgpt.engine", "Question": "smolrgpt.engine", "Answer": "smolrgpt.engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'smolrgpt' has no attribute {name!r}")
