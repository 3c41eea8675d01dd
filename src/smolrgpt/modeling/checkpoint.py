"""Loading a SmolRGPT checkpoint folder (model + processor + tokenizer) for every command."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from smolrgpt.errors import CheckpointError

REQUIRED_FILES = ("config.json", "processor_config.json", "tokenizer_config.json")


def check_checkpoint_folder(path: str | Path) -> Path:
    """Refuse a missing, partial or foreign checkpoint with a clear message before loading anything."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(folder.glob("model*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise CheckpointError(f"{folder} is not a complete SmolRGPT checkpoint: missing {', '.join(missing)}")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder / 'config.json'} is not valid JSON ({exc})") from None
    if model_type != "smolrgpt":
        raise CheckpointError(f"{folder} holds a {model_type!r} model, not a SmolRGPT checkpoint "
                              "(use `smolrgpt convert` for the authors' released weights)")
    return folder


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(model, processor) from a folder written by `save_pretrained` / `smolrgpt init` / training."""
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.processing.processor import SmolRGPTProcessor

    folder = check_checkpoint_folder(path)
    try:
        model = SmolRGPTForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the model in {folder} ({exc})") from None
    processor = SmolRGPTProcessor.from_pretrained(folder)
    return model.to(device).eval(), processor


def write_checkpoint_files(model, processor, folder: Path, extra_files: dict[str, str] | None = None) -> None:
    """Model, processor and tokenizer into an existing folder (safetensors only; not atomic by itself)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)


def save_checkpoint(model, processor, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Model, processor and tokenizer into one folder, atomically: a crash leaves either the old
    checkpoint or the new one, never half of each."""
    from smolrgpt.atomic import staged_folder

    with staged_folder(path) as staging:
        write_checkpoint_files(model, processor, staging, extra_files)
    return Path(path)
