from smolrgpt.modeling.config import PRESETS, SmolRGPTConfig
from smolrgpt.modeling.model import FrameFeatures, InputMismatchError, SmolRGPTForConditionalGeneration
from smolrgpt.processing.processor import SmolRGPTProcessor


def _register_auto_class() -> None:
    """So that AutoProcessor loads SmolRGPT folders: registered here, where the config is known, because
    the processor sits below the model."""
    from transformers import AutoProcessor

    AutoProcessor.register(SmolRGPTConfig, SmolRGPTProcessor, exist_ok=True)


_register_auto_class()

__all__ = ["PRESETS", "SmolRGPTConfig", "SmolRGPTForConditionalGeneration", "FrameFeatures", "InputMismatchError"]
