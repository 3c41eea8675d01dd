"""Fixtures of the bad-input corpus and the second-run suite (no tests here): one tiny checkpoint, one tiny
split and its broken variants, built once per session; commands run in-process through `smolrgpt.cli.main`."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from smolrgpt.cli import main

from conftest import write_track3_split


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one command; argparse's own refusals (SystemExit 2) included.
    Anything else escaping main() is a traceback, and fails the test by itself."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def make_checkpoint(folder: Path, seed: int = 1) -> Path:
    assert main(["init", "--preset", "smolrgpt-tiny", "--out", str(folder), "--seed", str(seed)]) == 0
    return folder


def _rewrite(path: Path, edit) -> None:
    path.write_bytes(edit(path.read_bytes()))


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) - 100] ^= 0xFF  # inside the tensor data: the header stays valid
    return bytes(b)


def _header_length(data: bytes, length: int) -> bytes:
    return struct.pack("<Q", length) + data[8:]


def _corrupt_header(data: bytes) -> bytes:
    return data[:8] + b"!" + data[9:]


def _no_manifest_but_truncated(folder: Path) -> None:
    (folder / "manifest.json").unlink()
    _rewrite(folder / "model.safetensors", lambda d: d[: len(d) // 2])


# name -> (how to break a copy of a good checkpoint, what the one-line refusal must contain)
BROKEN_CHECKPOINTS = {
    "flipped_byte": (lambda f: _rewrite(f / "model.safetensors", _flip), "model.safetensors does not match its sha256"),
    "truncated_weights": (lambda f: _rewrite(f / "model.safetensors", lambda d: d[:-1000]),
                          "model.safetensors has"),
    "truncated_no_manifest": (_no_manifest_but_truncated, "model.safetensors is truncated"),
    "corrupt_header_no_manifest": (lambda f: ((f / "manifest.json").unlink(),
                                              _rewrite(f / "model.safetensors", _corrupt_header)),
                                   "safetensors header is not valid"),
    "header_length_1e12": (lambda f: ((f / "manifest.json").unlink(),
                                      _rewrite(f / "model.safetensors", lambda d: _header_length(d, 10**12))),
                           "its header claims 1,000,000,000,000 bytes"),
    "empty_weights": (lambda f: ((f / "manifest.json").unlink(), (f / "model.safetensors").write_bytes(b"")),
                      "not even a safetensors header"),
    "no_tokenizer_json": (lambda f: ((f / "manifest.json").unlink(), (f / "tokenizer.json").unlink()),
                          "missing tokenizer.json"),
    "no_config": (lambda f: (f / "config.json").unlink(), "missing config.json"),
    "config_not_json": (lambda f: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    "other_model_type": (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "llama"})),
                         "holds a 'llama' model, not a SmolRGPT checkpoint"),
    "manifest_unreadable": (lambda f: (f / "manifest.json").write_text("[1, 2"), "manifest.json is unreadable"),
    "manifest_names_a_missing_file": (lambda f: (f / "chat_template.jinja").unlink(),
                                      "is incomplete: chat_template.jinja is missing"),
    "tokenizer_flipped": (lambda f: _rewrite(f / "tokenizer.json", lambda d: d.replace(b"{", b" ", 1)),
                          "tokenizer.json does not match its sha256"),
}


def broken_checkpoint(good: Path, root: Path, name: str) -> Path:
    target = root / name
    if not target.exists():
        shutil.copytree(good, target)
        BROKEN_CHECKPOINTS[name][0](target)
    return target


def truncated_png(path: Path) -> None:
    """A PNG whose header is intact and whose pixel data is cut short."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def split_with_a_truncated_image(root: Path) -> tuple[Path, str, Path]:
    """A 3-frame split whose first frame's RGB image is truncated: (split file, a bad id, the bad file)."""
    split = write_track3_split(root, frames=3, questions_per_frame=2)
    bad = root / "val" / "images" / "000000.png"
    truncated_png(bad)
    first = json.loads(split.read_text())[0]
    return split, first["id"], bad
