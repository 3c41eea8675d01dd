"""Importer for the original authors' released checkpoints, as their code (a nanoVLM fork) writes them.

Their `save_pretrained` writes `config.json` (their config dataclass as a dict) and `model.safetensors`
with `safetensors.torch.save_model`, which keeps one name of each shared tensor: the tied LM embedding is
stored only as `decoder.head.weight` and the file's metadata records the dropped name
(`{"decoder.token_embedding.weight": "decoder.head.weight"}`); the RoPE buffer
`decoder.rotary_embd.inv_freq` is stored too. Their released weights ship as a `.tar` of one such folder
per training stage, each saved inside the previous stage's folder (authors_stages.py finds them).

Their loader used strict=False and silently ignored missing keys; this one maps every key by name,
checks every shape, and refuses to produce a model unless every source tensor was used and every model
tensor was filled. The report lists anything unmatched.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig

from smolrgpt.errors import CheckpointError
from smolrgpt.modeling.config import SmolRGPTConfig
from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration

_VISION = "vision_tower."  # transformers 5 SiglipVisionModel keys have no vision_model. level
_LM = "language_model.model."
# (authors' name pattern, our name template); \1 is the block index.
_RENAMES = [
    (r"vision_encoder\.patch_embedding\.conv\.(weight|bias)", _VISION + r"embeddings.patch_embedding.\1"),
    (r"vision_encoder\.blocks\.(\d+)\.ln1\.(weight|bias)", _VISION + r"encoder.layers.\1.layer_norm1.\2"),
    (r"vision_encoder\.blocks\.(\d+)\.ln2\.(weight|bias)", _VISION + r"encoder.layers.\1.layer_norm2.\2"),
    (r"vision_encoder\.blocks\.(\d+)\.attn\.out_proj\.(weight|bias)", _VISION + r"encoder.layers.\1.self_attn.out_proj.\2"),
    (r"vision_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", _VISION + r"encoder.layers.\1.mlp.\2.\3"),
    (r"vision_encoder\.layer_norm\.(weight|bias)", _VISION + r"post_layernorm.\1"),
    (r"decoder\.token_embedding\.weight", _LM + "embed_tokens.weight"),
    (r"decoder\.blocks\.(\d+)\.attn\.(q_proj|k_proj|v_proj)\.weight", _LM + r"layers.\1.self_attn.\2.weight"),
    (r"decoder\.blocks\.(\d+)\.attn\.out_proj\.weight", _LM + r"layers.\1.self_attn.o_proj.weight"),
    (r"decoder\.blocks\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight", _LM + r"layers.\1.mlp.\2.weight"),
    (r"decoder\.blocks\.(\d+)\.norm1\.weight", _LM + r"layers.\1.input_layernorm.weight"),
    (r"decoder\.blocks\.(\d+)\.norm2\.weight", _LM + r"layers.\1.post_attention_layernorm.weight"),
    (r"decoder\.norm\.weight", _LM + "norm.weight"),
    (r"MP\.proj\.weight", "rgb_connector.proj.weight"),
    (r"MP_depth\.proj\.weight", "depth_connector.proj.weight"),
    (r"(rgb|depth)_refiner\.refiner\.(\d+)\.(weight|bias)", r"\1_refiner.refiner.\2.\3"),
]
_RENAMES = [(re.compile(pattern + "$"), target) for pattern, target in _RENAMES]
_QKV = re.compile(r"vision_encoder\.blocks\.(\d+)\.attn\.qkv_proj\.(weight|bias)$")
_POSITION = "vision_encoder.patch_embedding.position_embedding"
_HEAD = "decoder.head.weight"
_EMBEDDING = "decoder.token_embedding.weight"
_INV_FREQ = "decoder.rotary_embd.inv_freq"
# The authors' mask pooling divides by the weights' sum + 1e-8 (ours: config.mask_pool_eps 1e-6).
AUTHORS_MASK_POOL_EPS = 1e-8
# Their code resizes masks to a fixed 64x64, the refined grid of their 256 px / patch 16 / shuffle 2 model.
AUTHORS_MASK_GRID = 64
_POSITIVE_INTS = ("vit_hidden_dim", "vit_inter_dim", "vit_patch_size", "vit_img_size", "vit_n_heads", "vit_n_blocks",
                  "lm_hidden_dim", "lm_inter_dim", "lm_vocab_size", "lm_n_heads", "lm_n_kv_heads", "lm_n_blocks")
_OPTIONAL_POSITIVE_INTS = ("lm_max_position_embeddings", "lm_base_vocab_size", "mp_pixel_shuffle_factor",
                           "mp_image_token_length")
_OPTIONAL_POSITIVE_FLOATS = ("vit_ln_eps", "lm_rms_eps", "lm_re_base")


@dataclass
class ImportReport:
    mapped: int = 0
    unused_source_keys: list[str] = field(default_factory=list)
    missing_model_keys: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unused_source_keys or self.missing_model_keys or self.shape_mismatches)

    def __str__(self) -> str:
        lines = [f"mapped tensors: {self.mapped}"]
        for title, items in (("unused source keys", self.unused_source_keys),
                             ("model keys not filled", self.missing_model_keys),
                             ("shape mismatches", self.shape_mismatches), ("notes", self.notes)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:50])
                if len(items) > 50:
                    lines.append(f"  ... and {len(items) - 50} more")
        return "\n".join(lines)


def check_authors_config(raw, path: str | Path = "config.json") -> dict:
    """Their config fields, checked before anything is built: one clear line per problem."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a JSON {type(raw).__name__}, not the authors' config object")
    if raw.get("model_type") == "smolrgpt":
        raise CheckpointError(f"{Path(path).parent} is already a SmolRGPT checkpoint: load it directly "
                              "(--model); `convert` imports the authors' released weights")
    for key in _POSITIVE_INTS:
        if key not in raw:
            raise CheckpointError(f"{path} lacks the field {key!r} (not an authors' SmolRGPT/nanoVLM config)")
    for key in _POSITIVE_INTS + _OPTIONAL_POSITIVE_INTS:
        value = raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointError(f"{path}: {key} must be a positive integer, got {value!r}")
    for key in _OPTIONAL_POSITIVE_FLOATS:
        value = raw.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise CheckpointError(f"{path}: {key} must be a positive number, got {value!r}")
    for whole, part in (("vit_hidden_dim", "vit_n_heads"), ("vit_img_size", "vit_patch_size"),
                        ("lm_hidden_dim", "lm_n_heads"), ("lm_n_heads", "lm_n_kv_heads")):
        if raw[whole] % raw[part]:
            raise CheckpointError(f"{path}: {whole}={raw[whole]} is not divisible by {part}={raw[part]}")
    side, factor = raw["vit_img_size"] // raw["vit_patch_size"], raw.get("mp_pixel_shuffle_factor", 2)
    if side % factor:
        raise CheckpointError(f"{path}: the {side}x{side} patch grid is not divisible by "
                              f"mp_pixel_shuffle_factor={factor}")
    tokens = (side // factor) ** 2
    if raw.get("mp_image_token_length", tokens) != tokens:
        raise CheckpointError(f"{path}: mp_image_token_length={raw['mp_image_token_length']} but the ViT and "
                              f"pixel shuffle give {tokens} image tokens")
    if raw.get("lm_base_vocab_size", raw["lm_vocab_size"] - 3) + 3 > raw["lm_vocab_size"]:
        raise CheckpointError(f"{path}: lm_vocab_size={raw['lm_vocab_size']} leaves no room for the three "
                              f"SmolRGPT tokens after lm_base_vocab_size={raw['lm_base_vocab_size']}")
    if raw.get("vit_cls_flag"):
        raise CheckpointError("checkpoints with a ViT class token (vit_cls_flag=true) are not SigLIP-compatible")
    return raw


def config_from_authors(raw: dict) -> SmolRGPTConfig:
    """Our config from their dataclass fields (vit_*, lm_*, mp_*)."""
    check_authors_config(raw)
    vision = AutoConfig.for_model(
        "siglip_vision_model", hidden_size=raw["vit_hidden_dim"], intermediate_size=raw["vit_inter_dim"],
        patch_size=raw["vit_patch_size"], image_size=raw["vit_img_size"], num_attention_heads=raw["vit_n_heads"],
        num_hidden_layers=raw["vit_n_blocks"], layer_norm_eps=raw.get("vit_ln_eps", 1e-6), vision_use_head=False,
    )
    vocab = raw["lm_vocab_size"]
    text = AutoConfig.for_model(
        "llama", hidden_size=raw["lm_hidden_dim"], intermediate_size=raw["lm_inter_dim"],
        rms_norm_eps=raw.get("lm_rms_eps", 1e-5), rope_theta=float(raw.get("lm_re_base", 100000)),
        max_position_embeddings=raw.get("lm_max_position_embeddings", 8192), vocab_size=vocab,
        num_attention_heads=raw["lm_n_heads"], num_key_value_heads=raw["lm_n_kv_heads"],
        num_hidden_layers=raw["lm_n_blocks"], tie_word_embeddings=bool(raw.get("lm_tie_weights", True)),
        hidden_act="silu",
    )
    base = raw.get("lm_base_vocab_size", vocab - 3)
    return SmolRGPTConfig(
        vision_config=vision, text_config=text, pixel_shuffle_factor=raw.get("mp_pixel_shuffle_factor", 2),
        image_token_id=base, mask_rgb_token_id=base + 1, mask_depth_token_id=base + 2,
        mask_pool_eps=AUTHORS_MASK_POOL_EPS, tie_word_embeddings=text.tie_word_embeddings,  # both levels tie
    )


def restore_tied_embedding(source: dict[str, torch.Tensor], metadata: dict[str, str], tied: bool,
                           report: ImportReport, where: str) -> None:
    """The LM embedding that `save_model` dropped as the head's tied twin, taken back from the head; an
    error when the file's metadata does not record that tie."""
    if _EMBEDDING in source:
        if tied and _HEAD in source and not torch.equal(source[_EMBEDDING], source[_HEAD]):
            raise CheckpointError(f"{where}: {_HEAD} differs from {_EMBEDDING} although lm_tie_weights is true")
        return
    kept = metadata.get(_EMBEDDING)
    if kept is None:
        raise CheckpointError(f"{where} has no {_EMBEDDING} and its metadata records no tie for it (save_model "
                              f"records a dropped tied name as {{{_EMBEDDING!r}: {_HEAD!r}}})")
    if kept != _HEAD:
        raise CheckpointError(f"{where}: its metadata says {_EMBEDDING} was saved as {kept!r}, not as {_HEAD}")
    if not tied:
        raise CheckpointError(f"{where}: its metadata ties {_EMBEDDING} to {_HEAD} but the config says "
                              "lm_tie_weights is false")
    if _HEAD not in source:
        raise CheckpointError(f"{where}: its metadata says {_EMBEDDING} was saved as {_HEAD}, which it lacks")
    source[_EMBEDDING] = source[_HEAD]
    report.notes.append(f"{_EMBEDDING}: tied to {_HEAD} (the file's metadata), taken from it")


def rope_inv_freq(base: float, head_size: int) -> torch.Tensor:
    """1 / base^(2i/d), i = 0 .. d/2 - 1: the RoPE frequencies of a head of size d."""
    return 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))


def drop_checked_inv_freq(source: dict[str, torch.Tensor], raw: dict, report: ImportReport, where: str) -> None:
    """The stored RoPE buffer must be what the config's lm_re_base and head size give (our LM computes
    it from the config, so a different one would silently change every attention score)."""
    stored = source.pop(_INV_FREQ, None)
    base, head = float(raw.get("lm_re_base", 100000)), raw["lm_hidden_dim"] // raw["lm_n_heads"]
    if stored is None:
        report.notes.append(f"{_INV_FREQ}: not in the file (nothing to check)")
        return
    expected = rope_inv_freq(base, head)
    rtol = max(1e-5, 2 * torch.finfo(stored.dtype).eps) if stored.is_floating_point() else 0.0
    if stored.shape != expected.shape or not torch.allclose(stored.double(), expected, rtol=rtol, atol=0.0):
        first = stored.flatten()[:3].tolist()
        raise CheckpointError(
            f"{where}: {_INV_FREQ} {tuple(stored.shape)} {first} is not 1/lm_re_base^(2i/d) for lm_re_base={base:g} "
            f"and head size d={head} ({tuple(expected.shape)} {expected[:3].tolist()}): the config does not "
            "describe these weights")
    report.notes.append(f"{_INV_FREQ}: equals 1/{base:g}^(2i/{head}) (lm_re_base, head size), dropped "
                        "(the model computes it from the config)")


def convert_state_dict(source: dict[str, torch.Tensor], config: SmolRGPTConfig) -> tuple[dict, ImportReport]:
    """Their tensors under our names (the embedding already restored, the RoPE buffer already dropped)."""
    report = ImportReport()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    tied = config.text_config.tie_word_embeddings
    for key, tensor in source.items():
        if key == _POSITION:
            out[_VISION + "embeddings.position_embedding.weight"] = tensor.reshape(tensor.shape[-2:])
        elif (m := _QKV.match(key)) is not None:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                out[f"{_VISION}encoder.layers.{m.group(1)}.self_attn.{name}.{m.group(2)}"] = part
        elif key == _HEAD:
            if not tied:  # tied: the embedding holds it (checked equal in restore_tied_embedding)
                out["language_model.lm_head.weight"] = tensor
        else:
            for pattern, target in _RENAMES:
                if pattern.match(key):
                    out[pattern.sub(target, key)] = tensor
                    break
            else:
                continue
        used.add(key)
    report.unused_source_keys = sorted(set(source) - used)
    return out, report


def read_authors_files(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    """(config fields, tensors, safetensors metadata) of one of their checkpoint folders."""
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found (expected the authors' config.json + model.safetensors)")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"cannot read {config_path} ({exc})") from None
    raw = check_authors_config(raw, config_path)
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            source = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types on a corrupt file
        raise CheckpointError(f"cannot read {weights_path} ({exc})") from None
    return raw, source, metadata


def import_authors_checkpoint(folder: str | Path) -> tuple[SmolRGPTForConditionalGeneration, ImportReport]:
    folder = Path(folder)
    raw, source, metadata = read_authors_files(folder)
    where = str(folder / "model.safetensors")
    config = config_from_authors(raw)
    pre = ImportReport()
    restore_tied_embedding(source, metadata, config.text_config.tie_word_embeddings, pre, where)
    drop_checked_inv_freq(source, raw, pre, where)
    model = SmolRGPTForConditionalGeneration(config)
    mapped, report = convert_state_dict(source, config)
    report.notes = pre.notes + report.notes
    if config.mask_grid != AUTHORS_MASK_GRID:
        fixed, grid = f"{AUTHORS_MASK_GRID}x{AUTHORS_MASK_GRID}", f"{config.mask_grid}x{config.mask_grid}"
        report.notes.append(f"mask grid {grid}: the authors' code resizes masks to a fixed {fixed} (the grid of their "
                            f"256 px, patch 16 model); masks are brought to this model's {grid}")
    expected = model.state_dict()
    tied = {"language_model.lm_head.weight"} if config.text_config.tie_word_embeddings else set()
    report.missing_model_keys = sorted(set(expected) - set(mapped) - tied)
    report.shape_mismatches = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in mapped.items() if k in expected and v.shape != expected[k].shape
    ]
    report.unused_source_keys += sorted(k for k in mapped if k not in expected)
    report.mapped = sum(1 for k in mapped if k in expected)
    if not report.ok:
        raise CheckpointError(f"the checkpoint in {folder} does not match the SmolRGPT layout:\n{report}")
    model.load_state_dict(mapped, strict=not tied)
    model.tie_weights()
    return model, report
