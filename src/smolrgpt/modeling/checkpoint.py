"""Checkpoint folders (model + processor + tokenizer) for every command: writing them with a manifest,
checking them before anything is loaded, and loading them.

manifest.json records the size and sha256 of every other file of the folder and is written last. Every
checkpoint this project writes carries one (`smolrgpt init`, `convert`, training, the demo's model);
`load_checkpoint` verifies it, so a flipped byte or a copy cut short is refused with one line naming the
file. A folder without a manifest (written by plain `save_pretrained`, or someone else's) still loads
after a note on stderr saying it cannot be verified; its safetensors headers are always checked.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from pathlib import Path

import torch

from smolrgpt.errors import CheckpointError, ConfigError

REQUIRED_FILES = ("config.json", "processor_config.json", "tokenizer_config.json")
MANIFEST = "manifest.json"
# The safetensors library refuses headers above 100 MB; checked here first so the message names the file.
MAX_SAFETENSORS_HEADER = 100_000_000


def check_checkpoint_folder(path: str | Path) -> Path:
    """Refuse a missing, partial or foreign checkpoint with a clear message before loading anything."""
    folder = Path(path)
    if not folder.is_dir():
        if folder.exists():
            raise CheckpointError(f"{folder} is a file, not a checkpoint folder")
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(folder.glob("model*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise CheckpointError(f"{folder} is not a complete SmolRGPT checkpoint: missing {', '.join(missing)}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'} is not valid JSON ({exc})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "smolrgpt":
        raise CheckpointError(f"{folder} holds a {model_type!r} model, not a SmolRGPT checkpoint "
                              "(use `smolrgpt convert` for the authors' released weights)")
    from smolrgpt.modeling.config import REMOVED_OPTIONS, removed_option_message

    for option in REMOVED_OPTIONS:
        if config.get(option):
            raise CheckpointError(f"{folder / 'config.json'}: {removed_option_message(option)}")
    return folder


def check_safetensors_file(path: Path) -> None:
    """The header of a safetensors file is readable and its tensors fill the file exactly: catches a
    truncated copy, a corrupt header and an absurd header length in milliseconds, without a manifest."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes: not even a safetensors header)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise CheckpointError(f"{path} is corrupt or truncated: its header claims {length:,} bytes, "
                                  f"the file has {size:,}")
        try:
            header = json.loads(fh.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
            raise CheckpointError(f"{path} is corrupt: its safetensors header is not valid") from None
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        state = "truncated" if expected > size else "corrupt"
        raise CheckpointError(f"{path} is {state}: its tensors need {expected:,} bytes, the file has {size:,}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, format: str = "smolrgpt-checkpoint", version: int = 1,
                   written_by: str | None = None, settings: dict | None = None) -> dict:
    """manifest.json: size and sha256 of every other file, fsynced first, written last."""
    from smolrgpt.atomic import file_sha256

    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)  # on disk before the manifest vouches for it
        files[str(path.relative_to(folder))] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format": format, "version": version, "files": files}
    if written_by:
        manifest["written_by"] = written_by
    if settings is not None:
        manifest["settings"] = settings
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync(folder / MANIFEST)
    return manifest


def verify_manifest(folder: str | Path) -> dict | None:
    """The manifest of a folder whose files all match it; None when the folder has no manifest;
    CheckpointError naming the file otherwise. Hashing reads every file once (about 1 GB/s)."""
    from smolrgpt.atomic import file_sha256

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        entries = [(str(name), int(meta["size"]), str(meta["sha256"])) for name, meta in files.items()]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder / MANIFEST} is unreadable ({type(exc).__name__}: {exc})") from None
    for name, expected_size, digest in entries:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {name} is missing")
        size = path.stat().st_size
        if size != expected_size:
            raise CheckpointError(f"checkpoint {folder} is corrupt: {name} has {size} bytes, the manifest "
                                  f"says {expected_size}")
        if file_sha256(path) != digest:
            raise CheckpointError(f"checkpoint {folder} is corrupt: {name} does not match its sha256")
    return manifest


def model_fingerprint(folder: str | Path) -> str:
    """One sha256 for the weights and config of a checkpoint (from its verified manifest when it has one),
    so that outputs can say which model made them."""
    import hashlib

    from smolrgpt.atomic import file_sha256

    folder = Path(folder)
    manifest = verify_manifest(folder)
    names = sorted(p.name for p in folder.glob("model*.safetensors")) + ["config.json"]
    digests = [manifest["files"][n]["sha256"] if manifest and n in manifest["files"] else file_sha256(folder / n)
               for n in names]
    return hashlib.sha256("\n".join(f"{n} {d}" for n, d in zip(names, digests)).encode()).hexdigest()


def verify_checkpoint_files(folder: str | Path, quiet: bool = False) -> dict | None:
    """Everything checkable before loading: the folder's files, the manifest when there is one (a note on
    stderr when there is none), and the safetensors headers."""
    folder = check_checkpoint_folder(folder)
    manifest = verify_manifest(folder)
    if manifest is None and not quiet:
        print(f"smolrgpt: note: {folder} has no {MANIFEST} (not written by smolrgpt): its files cannot be "
              "verified", file=sys.stderr)
    for path in sorted(folder.glob("model*.safetensors")):
        check_safetensors_file(path)
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder} is not a complete SmolRGPT checkpoint: missing tokenizer.json")
    return manifest


def check_device(device: str | torch.device) -> torch.device:
    """A device this machine can use, or a ConfigError saying why not (before anything is loaded)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--device {device}: cannot use it ({reason})") from None
    return dev


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    quiet: bool = False):
    """(model, processor) from a folder written by `save_checkpoint` / `smolrgpt init` / training, verified
    first (see `verify_checkpoint_files`)."""
    from safetensors import SafetensorError

    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.processing.processor import SmolRGPTProcessor

    folder = Path(path)
    device = check_device(device)
    verify_checkpoint_files(folder, quiet=quiet)
    try:
        model = SmolRGPTForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"cannot load the model in {folder} ({type(exc).__name__}: {exc})") from None
    try:
        processor = SmolRGPTProcessor.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"cannot load the processor or tokenizer in {folder} "
                              f"({type(exc).__name__}: {exc})") from None
    return model.to(device).eval(), processor


def write_checkpoint_files(model, processor, folder: Path, extra_files: dict[str, str] | None = None) -> None:
    """Model, processor and tokenizer into an existing folder (safetensors only; not atomic by itself)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)
    from smolrgpt.atomic import apply_umask

    for path in Path(folder).rglob("*"):
        apply_umask(path)


def save_checkpoint(model, processor, path: str | Path, extra_files: dict[str, str] | None = None,
                    written_by: str = "save_checkpoint", settings: dict | None = None) -> Path:
    """Model, processor, tokenizer and manifest into one folder, atomically: a crash leaves either the old
    checkpoint or the new one, never half of each. Callers decide first whether `path` may be replaced
    (`smolrgpt.atomic.claim_output`)."""
    from smolrgpt.atomic import staged_folder

    with staged_folder(path) as staging:
        write_checkpoint_files(model, processor, staging, extra_files)
        write_manifest(staging, written_by=written_by, settings=settings)
    return Path(path)


def saved_settings(folder: str | Path, written_by: str) -> dict | None:
    """The settings recorded in the manifest of a checkpoint that `written_by` wrote; None otherwise."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("written_by") != written_by:
        return None
    return manifest.get("settings") if isinstance(manifest.get("settings"), dict) else None


def claim_checkpoint_folder(path: str | Path, command: str, settings: dict, overwrite: bool, flag: str) -> None:
    """The shared output guard (`smolrgpt.atomic.claim_output`) for a command that writes a checkpoint."""
    from smolrgpt.atomic import claim_output

    claim_output(path, command, overwrite=overwrite, saved=saved_settings(path, command), settings=settings,
                 flag=flag)


@contextlib.contextmanager
def quiet_loading(quiet: bool = True):
    """No "Loading weights" progress bar while a checkpoint loads (commands given --no-progress, `ask`)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and enabled:
            hf_logging.enable_progress_bar()
