"""Atomic file writes: write to a temporary file beside the target, fsync, then rename over it, so a
crash leaves the old file or the new one, never a truncated mix. The one implementation for the project.

Also the one guard every writing command calls before it writes (`claim_output`): a command replaces only
what it wrote itself with the same settings, unless the user passes --overwrite.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from smolrgpt.errors import SmolRGPTError


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file written by a library that makes private temporary files (safetensors, transformers:
    0600) the mode a plain open() would have given it."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the user's usual mode
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent))


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike):
    """Build a folder atomically: yields a sibling staging folder to fill; on success it replaces
    `folder` (the old one is moved aside first, then removed), on error it is deleted and `folder` is
    left as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    except OSError as exc:  # name the folder asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        yield staging
        if folder.exists():
            retired = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(folder, retired)
            os.replace(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- never replace by surprise
class OutputExists(SmolRGPTError):
    """A command was asked to write where something it did not make (or made differently) already is."""


def describe_existing(path: str | os.PathLike) -> str:
    """What is at `path`, in a few words, for the refusal message."""
    path = Path(path)
    if not path.is_dir():
        return f"a file of {path.stat().st_size:,} bytes"
    names = sorted(p.name for p in path.iterdir())
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        kind = "a trained checkpoint" if "trainer_state.pt" in names or "trainer_state.json" in names \
            else "a model checkpoint"
    else:
        kind = "a folder"
    shown = ", ".join(names[:4]) + (f", ... ({len(names)} entries)" if len(names) > 4 else "")
    return f"{kind} ({shown})"


def _differences(saved: dict, wanted: dict) -> list[str]:
    return [f"{k} {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
            if saved.get(k) != wanted.get(k)]


def claim_output(path: str | os.PathLike, command: str, *, overwrite: bool, saved: dict | None = None,
                 settings: dict | None = None, folder: bool = True, flag: str = "--out",
                 can_overwrite: bool = True) -> str:
    """May `command` write to `path`? Returns "new" (nothing there, or an empty folder), "same" (this
    command's own earlier output with the same settings: resume or redo it) or "replace" (--overwrite
    given: the caller starts afresh; a file in the way of a folder is removed here). Refuses otherwise,
    saying what is there.

    `saved` is the settings the command recorded in its earlier output (None: the output is not this
    command's); `settings` are this run's, compared key by key. `can_overwrite`: the command has an
    --overwrite option (the refusal says so)."""
    path = Path(path)
    remedy = f"pass --overwrite to replace it, or choose another {flag}" if can_overwrite else \
        f"remove it or choose another {flag}"
    if not path.exists() and not path.is_symlink():
        return "new"
    if folder and path.is_dir() and not any(path.iterdir()):
        return "new"
    is_file_in_the_way = folder and not path.is_dir()
    if saved is not None and not is_file_in_the_way:
        changed = _differences(saved, settings or {})
        if not changed:
            return "same"
        if not overwrite:
            raise OutputExists(f"{flag} {path} holds `smolrgpt {command}` output made with other settings "
                               f"({'; '.join(changed)}); rerun with the same settings to resume it, {remedy}")
    elif not overwrite:
        what = describe_existing(path)
        if is_file_in_the_way:
            raise OutputExists(f"{flag} {path} is an existing file ({what}), not a folder; {remedy}")
        raise OutputExists(f"{flag} {path} already holds {what}, not written by `smolrgpt {command}`; {remedy}")
    if is_file_in_the_way:
        path.unlink()
    return "replace"


def clear_folder(path: str | os.PathLike) -> None:
    """Empty a folder that `claim_output` allowed to be replaced (the folder itself stays)."""
    path = Path(path)
    for item in path.iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
