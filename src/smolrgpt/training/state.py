"""Training checkpoints: model + processor (a normal SmolRGPT checkpoint folder) plus what an exact
resume needs, written atomically and verified before anything is loaded.

A folder holds:
  config.json, model.safetensors, processor and tokenizer files   (modeling.checkpoint.write_checkpoint_files)
  trainer_state.pt    optimizer (keyed by parameter name), scheduler, RNG states, step, epoch, data
                      position: tensors, numbers and strings only, read with torch.load(weights_only=True)
  trainer_state.json  the same counters in readable form
  manifest.json       size and sha256 of every other file, written last

The folder is assembled under a temporary name and renamed into place, so a crash leaves the previous
checkpoint or the new one. A folder whose manifest is missing, or whose files do not match it (a copy
cut short, a truncated file), is refused with a CheckpointError before any of it is loaded.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from smolrgpt.errors import CheckpointError
from smolrgpt.atomic import staged_folder
from smolrgpt.modeling import checkpoint as M
from smolrgpt.modeling.checkpoint import MANIFEST, write_checkpoint_files

TRAINER_STATE = "trainer_state.pt"
TRAINER_INFO = "trainer_state.json"
STATE_VERSION = 1


def write_manifest(folder: Path) -> dict:
    return M.write_manifest(folder, format="smolrgpt-training-checkpoint", version=STATE_VERSION, written_by="train")


def verify_checkpoint(folder: str | Path) -> dict:
    """The manifest of a complete, uncorrupted training checkpoint; CheckpointError otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    manifest = M.verify_manifest(folder)
    if manifest is None:
        raise CheckpointError(f"{folder} has no {MANIFEST}: the checkpoint is partial (or not written by "
                              "`smolrgpt train`); refusing to load it")
    return manifest


def write_checkpoint(folder: str | Path, model, processor, state: dict | None, info: dict,
                     model_state: dict | None = None) -> Path:
    """Write one checkpoint atomically. `model_state` (a full state dict) replaces the weights of
    `model` when the live model is sharded (FSDP)."""
    if model_state is not None:
        model = _plain_model(model.config, model_state)
    with staged_folder(folder) as staging:
        write_checkpoint_files(model, processor, staging)
        if state is not None:
            torch.save(state, staging / TRAINER_STATE)
        (staging / TRAINER_INFO).write_text(json.dumps(info, indent=1))
        write_manifest(staging)
    return Path(folder)


def _plain_model(config, state_dict: dict):
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration

    model = SmolRGPTForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {"language_model.lm_head.weight"}
    if set(missing) - tied or unexpected:
        raise CheckpointError(f"gathered weights do not match the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    return model


def find_resumable(out_dir: str | Path, name: str = "last") -> Path | None:
    """`out_dir/last`, or the previous `last` kept aside if a crash hit between the two renames."""
    out_dir = Path(out_dir)
    if (out_dir / name).is_dir():
        return out_dir / name
    for old in sorted(out_dir.glob(f".{name}.old-*")):
        try:
            verify_checkpoint(old)
            return old
        except CheckpointError:
            continue
    return None


def remove_stale_staging(out_dir: str | Path) -> None:
    """Temporary folders of checkpoints whose writing was interrupted (never complete, never used)."""
    for staging in Path(out_dir).glob(".*.tmp-*"):
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)


def read_state(folder: str | Path) -> dict:
    """The trainer state of a verified checkpoint (weights_only: no arbitrary objects are unpickled)."""
    folder = Path(folder)
    verify_checkpoint(folder)
    if not (folder / TRAINER_STATE).is_file():
        raise CheckpointError(f"{folder} holds no {TRAINER_STATE} (a `best` checkpoint cannot be resumed from)")
    try:
        state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise CheckpointError(f"cannot read {folder / TRAINER_STATE} ({exc})") from None
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{folder / TRAINER_STATE} has version {state.get('version')}, expected {STATE_VERSION}")
    return state


# --------------------------------------------------------------------------- random number generators
def rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _python_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _python_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
