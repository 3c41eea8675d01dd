"""Importer for the original authors' released checkpoints (nanoVLM-style `config.json` + `model.safetensors`).

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
from safetensors.torch import load_file
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


def config_from_authors(raw: dict) -> SmolRGPTConfig:
    """Our config from their dataclass fields (vit_*, lm_*, mp_*)."""
    try:
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
            num_hidden_layers=raw["lm_n_blocks"], tie_word_embeddings=raw.get("lm_tie_weights", True),
            hidden_act="silu",
        )
    except KeyError as exc:
        raise CheckpointError(f"the authors' config.json lacks the field {exc.args[0]!r}") from None
    if raw.get("vit_cls_flag"):
        raise CheckpointError("checkpoints with a ViT class token (vit_cls_flag=true) are not SigLIP-compatible")
    base = raw.get("lm_base_vocab_size", vocab - 3)
    return SmolRGPTConfig(
        vision_config=vision, text_config=text, pixel_shuffle_factor=raw.get("mp_pixel_shuffle_factor", 2),
        image_token_id=base, mask_rgb_token_id=base + 1, mask_depth_token_id=base + 2,
    )


def convert_state_dict(source: dict[str, torch.Tensor], config: SmolRGPTConfig) -> tuple[dict, ImportReport]:
    report = ImportReport()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, tensor in source.items():
        if key == _POSITION:
            out[_VISION + "embeddings.position_embedding.weight"] = tensor.reshape(tensor.shape[-2:])
        elif (m := _QKV.match(key)) is not None:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                out[f"{_VISION}encoder.layers.{m.group(1)}.self_attn.{name}.{m.group(2)}"] = part
        elif key == _HEAD:
            used.add(key)  # tied to the embedding: checked below, not loaded separately
            embedding = source.get("decoder.token_embedding.weight")
            if embedding is not None and not torch.equal(embedding, tensor):
                if config.text_config.tie_word_embeddings:
                    report.notes.append("decoder.head.weight differs from the embedding although weights are tied")
                else:
                    out["language_model.lm_head.weight"] = tensor
            continue
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


def import_authors_checkpoint(folder: str | Path) -> tuple[SmolRGPTForConditionalGeneration, ImportReport]:
    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found (expected the authors' config.json + model.safetensors)")
    try:
        raw = json.loads(config_path.read_text())
        source = load_file(str(weights_path))
    except (json.JSONDecodeError, OSError, Exception) as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read the checkpoint in {folder} ({exc})") from None
    config = config_from_authors(raw)
    model = SmolRGPTForConditionalGeneration(config)
    mapped, report = convert_state_dict(source, config)
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
