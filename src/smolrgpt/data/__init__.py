"""Data readers: every format becomes a stream of `Sample`s.

`open_dataset(path)` picks the reader by name or by sniffing the file (extension, then the keys of
the first record), so training and evaluation code never branch on formats. Readers are imported only
when used (pyarrow is not paid for by JSON users).

Folder arguments mean the same for every format: `images_root` is the folder the records' image
names are relative to and `depths_root` the folder of the depth maps. Omitted, each reader derives
them from the file's own layout (see the reader modules); OSD needs `images_root`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from smolrgpt.data.sample import CATEGORIES, MASK_TAG, Region, Sample
from smolrgpt.errors import SampleError

FORMATS = ("track3", "llava", "osd", "parquet", "spatialbench")

__all__ = ["CATEGORIES", "FORMATS", "MASK_TAG", "Region", "Sample", "detect_format", "open_dataset"]


def _format_of_record(record) -> str | None:
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if keys & {"qa_info", "image_info", "text_q"}:
        return "spatialbench"
    if "filename" in keys and "conversations" in keys:
        return "osd"
    if {"image", "conversations"} <= keys:
        return "track3" if keys & {"rle", "category", "normalized_answer", "freeform_answer"} else "llava"
    return None


def _first_line_record(path: Path):
    import json

    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        return json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SampleError(f"first line is not JSON ({exc})", source=str(path)) from None
                    except RecursionError:
                        raise SampleError("the first line is nested too deeply to read", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise SampleError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=str(path)) from None
    return None


def detect_format(path: str | Path) -> str:
    """The reader name for a file, from its extension and the keys of its first record."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        return "parquet"
    if not path.exists():
        raise SampleError("file not found", source=str(path))
    if path.suffix == ".jsonl":
        record = _first_line_record(path)
    else:
        from smolrgpt.data.jsonarray import first_element

        record = first_element(path)
    if record is None:
        raise SampleError("the file holds no records (an empty list or an empty file)", source=str(path))
    found = _format_of_record(record)
    if found is None and not isinstance(record, dict):
        raise SampleError(f"the first record is a JSON {type(record).__name__}, not an object", source=str(path))
    if found is None:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise SampleError(f"cannot tell the format from the first record (keys: {keys}); pass format= one of "
                          f"{', '.join(FORMATS)}", source=str(path))
    return found


def open_dataset(path: str | Path, format: str = "auto", *, images_root: str | Path | None = None,
                 depths_root: str | Path | None = None, validate: bool = True, **options) -> Iterator[Sample]:
    """Stream the Samples of a data file in any supported format.

    `options` go to the format's reader (e.g. `depth_name`, `region_form` for OSD; `depth_polarity`,
    `batch_size` for parquet).
    """
    name = detect_format(path) if format == "auto" else format
    if name == "track3":
        from smolrgpt.data.track3 import iter_track3

        return iter_track3(path, images_dir=images_root, depths_dir=depths_root, validate=validate, **options)
    if name == "llava":
        from smolrgpt.data.llava import iter_llava

        return iter_llava(path, images_dir=images_root, validate=validate, **options)
    if name == "osd":
        from smolrgpt.data.osd import iter_osd

        if images_root is None:
            raise SampleError("the Open Spatial Dataset has no image folder of its own: pass images_root",
                              source=str(path))
        return iter_osd(path, images_dir=images_root, depths_dir=depths_root, validate=validate, **options)
    if name == "parquet":
        from smolrgpt.data.parquet import iter_parquet

        return iter_parquet(path, images_dir=images_root, depths_dir=depths_root, validate=validate, **options)
    if name == "spatialbench":
        import importlib
        import importlib.util

        # Written separately; until it exists, say so instead of failing with an import error.
        if importlib.util.find_spec("smolrgpt.data.spatialbench") is None:
            raise SampleError("the SpatialRGPT-Bench reader (smolrgpt.data.spatialbench) is not installed",
                              source=str(path))
        if images_root is None:
            raise SampleError("SpatialRGPT-Bench images live outside the file: pass images_root", source=str(path))
        iter_spatialbench = importlib.import_module("smolrgpt.data.spatialbench").iter_spatialbench
        return iter_spatialbench(path, images_root=images_root, depths_root=depths_root, **options)
    raise SampleError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)} or 'auto'", source=str(path))
