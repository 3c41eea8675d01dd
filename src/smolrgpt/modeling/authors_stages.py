"""The authors' released weights as they ship: a `.tar` (or an unpacked folder) of stage folders.

Their trainer saves each stage's best checkpoint (`best_rgb_align_*`, `best_refiners_align_*`,
`best_lp_warehouse_*`, each a `config.json` + `model.safetensors`) inside the previous stage's folder, so
the folders may be nested. A stage folder is any folder holding both files; `--stage` picks one by its
name (or a unique beginning of it, e.g. `best_lp_warehouse`), and a single one is used without asking.
"""
from __future__ import annotations

import contextlib
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from smolrgpt.errors import CheckpointError

STAGE_PREFIXES = ("best_rgb_align_", "best_refiners_align_", "best_lp_warehouse_")
CHECKPOINT_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class Stage:
    name: str  # the folder's own name
    path: str  # posix path of the folder inside the archive or folder ("" for its top)

    def __str__(self) -> str:
        return self.path or self.name


def _safe_name(name: str) -> str | None:
    """A member name as a relative posix path, or None for one that points outside (absolute, `..`)."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    normal = posixpath.normpath(name) if name else ""
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        return None
    return "" if normal == "." else normal


def stages_in(files: list[str], top_name: str) -> list[Stage]:
    """Stage folders among relative file paths: the folders holding both checkpoint files, outermost first."""
    by_folder: dict[str, set[str]] = {}
    for name in files:
        folder, base = posixpath.split(name)
        by_folder.setdefault(folder, set()).add(base)
    found = [folder for folder, names in by_folder.items() if set(CHECKPOINT_FILES) <= names]
    found.sort(key=lambda f: (f.count("/") + bool(f), f))
    return [Stage(posixpath.basename(f) if f else top_name, f) for f in found]


def choose_stage(stages: list[Stage], wanted: str | None, source: str | Path) -> Stage:
    listing = ", ".join(str(s) for s in stages)
    if not stages:
        raise CheckpointError(f"{source} holds no checkpoint folder (a folder with {' + '.join(CHECKPOINT_FILES)}; "
                              f"the authors' stage folders are named {', '.join(p + '*' for p in STAGE_PREFIXES)})")
    if wanted is None:
        if len(stages) == 1:
            return stages[0]
        raise CheckpointError(f"{source} holds {len(stages)} stages: choose one with --stage NAME: {listing}")
    exact = [s for s in stages if wanted in (s.name, s.path)]
    matches = exact or [s for s in stages if s.name.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CheckpointError(f"{source} has no stage {wanted!r}; it holds: {listing}")
    raise CheckpointError(f"--stage {wanted!r} matches {len(matches)} stages of {source}: "
                          f"{', '.join(str(s) for s in matches)}")


@contextlib.contextmanager
def authors_checkpoint_folder(source: str | Path, stage: str | None = None, workdir: str | Path | None = None):
    """Yields (folder with config.json + model.safetensors, the Stage chosen, every Stage found).

    A `.tar` is read without unpacking all of it: only the chosen stage's two files are extracted, with
    tarfile's "data" filter (no links out, no absolute or `..` paths), into a temporary folder in
    `workdir` that is removed afterwards, whatever happens."""
    source = Path(source)
    if source.is_dir():
        files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
        stages = stages_in(files, source.resolve().name)
        chosen = choose_stage(stages, stage, source)
        yield source / chosen.path, chosen, stages
        return
    if not source.is_file():
        raise CheckpointError(f"{source} not found (expected the authors' checkpoint folder or their weights .tar)")
    if not tarfile.is_tarfile(source):
        raise CheckpointError(f"{source} is neither a folder nor a .tar archive of the authors' checkpoints")
    try:
        archive = tarfile.open(source)
    except (tarfile.TarError, OSError) as exc:
        raise CheckpointError(f"cannot read the archive {source} ({exc})") from None
    with archive:
        try:
            members = {name: m for m in archive.getmembers() if m.isfile()
                       and (name := _safe_name(m.name)) is not None}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CheckpointError(f"cannot read the archive {source} ({exc})") from None
        stages = stages_in(list(members), source.name.removesuffix(".tar"))
        chosen = choose_stage(stages, stage, source)
        try:
            temporary = tempfile.TemporaryDirectory(prefix=".smolrgpt-convert-", dir=workdir)
        except OSError as exc:
            raise CheckpointError(f"cannot make a temporary folder to extract {chosen} into ({exc})") from None
        with temporary as tmp:
            for name in CHECKPOINT_FILES:
                member = members[posixpath.join(chosen.path, name) if chosen.path else name]
                try:
                    archive.extract(member, tmp, filter="data")
                except (tarfile.TarError, OSError) as exc:  # FilterError is a TarError
                    raise CheckpointError(f"refusing {member.name!r} in {source} ({exc})") from None
            yield Path(tmp) / chosen.path, chosen, stages
