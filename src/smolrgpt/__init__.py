"""SmolRGPT: a compact vision-language model for spatial questions on RGB + depth + region masks."""
from smolrgpt.data.sample import Region, Sample
from smolrgpt.modeling.checkpoint import load_checkpoint, save_checkpoint
from smolrgpt.modeling.config import PRESETS, SmolRGPTConfig
from smolrgpt.modeling.model import FrameFeatures, SmolRGPTForConditionalGeneration
from smolrgpt.processing.processor import SmolRGPTProcessor

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "FrameFeatures", "Region", "Sample", "SmolRGPTConfig", "SmolRGPTForConditionalGeneration",
    "SmolRGPTProcessor", "load_checkpoint", "save_checkpoint",
]


def _register_auto_classes() -> None:
    """So that AutoModelForImageTextToText / AutoProcessor load SmolRGPT folders once smolrgpt is imported."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    AutoModelForImageTextToText.register(SmolRGPTConfig, SmolRGPTForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(SmolRGPTConfig, SmolRGPTProcessor, exist_ok=True)


_register_auto_classes()
