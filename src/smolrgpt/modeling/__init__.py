from smolrgpt.modeling.config import PRESETS, SmolRGPTConfig
from smolrgpt.modeling.model import FrameFeatures, InputMismatchError, SmolRGPTForConditionalGeneration

__all__ = ["PRESETS", "SmolRGPTConfig", "SmolRGPTForConditionalGeneration", "FrameFeatures", "InputMismatchError"]
