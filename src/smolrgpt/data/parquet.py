"""Reader for the SmolRGPT authors' parquet repacks (warehouse-rgbd, osd-110k, llava-cc3m ...).

Columns: `id_db, id, rgb_image, depth_image, rle (list of {size, counts}), texts {user, assistant},
category, normalized_answer, dataset_name`. Read in row batches with pyarrow, never whole.

Images come in either of two forms, both handled:
  - embedded bytes (a binary column, or a `{bytes, path}` struct as written by `datasets`): the Sample
    gets a lazily opened PIL image: only the header is parsed until the processor needs the pixels;
  - a file name (a string column, what the authors' published repacks hold): resolved as
    `<dataset_dir>/[<split>/]images/<name>` and `<dataset_dir>/[<split>/]depths/<name>`, where
    `dataset_dir` is the folder above `data/` holding the parquet file (the authors' layout) and
    `<split>/` is used when the parquet's name starts with train/val/test and that folder exists.
    `images_dir` / `depths_dir` override both folders.

`texts` may be one `{user, assistant}` struct or a list of them (multi-turn). Region tags are brought
to this project's single `<mask>`: the repacks' `<mask_rgb><mask_depth>` and OSD's `<mask> <depth>`.

Depth polarity comes from `dataset_name` (documented mapping below): warehouse -> "far_bright";
osd / spatial (SpatialRGPT data, Depth-Anything maps) -> "near_bright"; datasets without depth
(llava) need none. Any other name with a depth image is an error unless `depth_polarity` is given.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Iterator

from smolrgpt.data.sample import MASK_TAG, Region, Sample
from smolrgpt.errors import SampleError

COLUMNS = ("id_db", "id", "rgb_image", "depth_image", "rle", "texts", "category", "normalized_answer",
           "dataset_name")
# Substring of dataset_name (lower case) -> depth polarity; first match wins.
POLARITY_BY_DATASET = (("warehouse", "far_bright"), ("track3", "far_bright"), ("osd", "near_bright"),
                       ("spatial", "near_bright"), ("spacial", "near_bright"))

_REGION_TAGS = re.compile(r"<mask_rgb>\s*<mask_depth>|<mask>\s*<depth>")


def parquet_files(path: str | Path) -> list[Path]:
    """A parquet file, or every `*.parquet` under a folder (sorted, so the order is reproducible)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise SampleError("no .parquet file in this folder", source=str(path))
        return files
    if not path.exists():
        raise SampleError("file not found", source=str(path))
    return [path]


def polarity_for(dataset_name: str | None, override: str | None, *, sample_id: str, source: str) -> str:
    if override is not None:
        return override
    name = (dataset_name or "").lower()
    for key, polarity in POLARITY_BY_DATASET:
        if key in name:
            return polarity
    raise SampleError(f"unknown depth polarity for dataset_name {dataset_name!r}: pass depth_polarity="
                      "'far_bright' or 'near_bright'", sample_id=sample_id, source=source)


def lazy_image(data: bytes):
    """A PIL image that has parsed only its header; pixels are decoded on first use."""
    from PIL import Image

    return Image.open(io.BytesIO(data))


def _turns(texts: Any, *, sample_id: str, source: str) -> list[tuple[str, str | None]]:
    items = texts if isinstance(texts, list) else [texts]
    turns = []
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("user"), str):
            raise SampleError(f"texts[{k}] must have a string 'user'", sample_id=sample_id, source=source)
        answer = item.get("assistant")
        if answer is not None and not isinstance(answer, str):
            raise SampleError(f"texts[{k}].assistant must be a string", sample_id=sample_id, source=source)
        turns.append((_REGION_TAGS.sub(MASK_TAG, item["user"]), answer))
    if not turns:
        raise SampleError("'texts' is empty", sample_id=sample_id, source=source)
    return turns


class Locator:
    """Resolves file-name image columns; folder existence is looked up once per file, not per row."""

    def __init__(self, parquet_path: Path, images_dir, depths_dir):
        base = parquet_path.parent.parent if parquet_path.parent.name == "data" else parquet_path.parent
        split = next((s for s in ("train", "val", "test") if parquet_path.name.startswith(s)), None)
        if split and (base / split).is_dir():
            base = base / split
        self.images = Path(images_dir) if images_dir is not None else base / "images"
        self.depths = Path(depths_dir) if depths_dir is not None else base / "depths"


def _image_value(value: Any, folder: Path, what: str, *, sample_id: str, source: str):
    if value is None:
        return None
    if isinstance(value, dict):  # `datasets` Image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return lazy_image(bytes(value))
    if isinstance(value, str) and value:
        return folder / value
    raise SampleError(f"'{what}' must be image bytes or a file name", sample_id=sample_id, source=source)


def parquet_row_to_sample(row: dict, index: int, *, path: Path, locator: Locator,
                          depth_polarity: str | None = None, validate: bool = True) -> Sample:
    """One row (as a dict) -> Sample. Raises SampleError naming the row and the file."""
    source = f"{path}#row {index}"
    if row.get("id") is None:
        raise SampleError("missing 'id'", sample_id=f"#{index}", source=source)
    sample_id = str(row["id"])
    turns = _turns(row.get("texts"), sample_id=sample_id, source=source)
    rle = row.get("rle") or []
    regions = [Region("rle", {"size": list(e["size"]), "counts": e["counts"]}) if isinstance(e, dict) else
               Region("rle", e) for e in rle]
    tags = sum(q.count(MASK_TAG) for q, _ in turns)
    if validate and tags != len(regions):
        raise SampleError(f"the question has {tags} {MASK_TAG} tags but the row has {len(regions)} masks",
                          sample_id=sample_id, source=source)
    image = _image_value(row.get("rgb_image"), locator.images, "rgb_image", sample_id=sample_id, source=source)
    depth = _image_value(row.get("depth_image"), locator.depths, "depth_image", sample_id=sample_id, source=source)
    dataset_name = row.get("dataset_name")
    polarity = polarity_for(dataset_name, depth_polarity, sample_id=sample_id, source=source) \
        if depth is not None else (depth_polarity or "far_bright")
    return Sample(
        id=sample_id,
        image=image,
        turns=turns,
        regions=regions,
        depth=depth,
        depth_polarity=polarity,
        category=row.get("category"),
        normalized_answer=row.get("normalized_answer"),
        source=source,
        meta={"index": index, "format": "parquet", "dataset_name": dataset_name, "id_db": row.get("id_db")},
    )


def iter_parquet_rows(path: str | Path, *, batch_size: int = 64) -> Iterator[tuple[Path, int, dict]]:
    """(file, row index within the file, row dict), read `batch_size` rows at a time."""
    import pyarrow.parquet as pq

    for file in parquet_files(path):
        try:
            reader = pq.ParquetFile(file)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses with no common base
            raise SampleError(f"not a readable parquet file ({exc})", source=str(file)) from None
        wanted = [c for c in COLUMNS if c in reader.schema_arrow.names]
        for required in ("id", "texts"):
            if required not in wanted:
                raise SampleError(f"parquet file has no '{required}' column (columns: {reader.schema_arrow.names})",
                                  source=str(file))
        index = 0
        for batch in reader.iter_batches(batch_size=batch_size, columns=wanted):
            columns = {name: batch.column(name).to_pylist() for name in wanted}
            for k in range(batch.num_rows):
                yield file, index, {name: values[k] for name, values in columns.items()}
                index += 1


def iter_parquet(path: str | Path, *, images_dir: str | Path | None = None, depths_dir: str | Path | None = None,
                 depth_polarity: str | None = None, batch_size: int = 64, validate: bool = True) -> Iterator[Sample]:
    """Stream the Samples of a parquet file (or of every parquet file under a folder)."""
    locators: dict[Path, Locator] = {}
    for file, index, row in iter_parquet_rows(path, batch_size=batch_size):
        locator = locators.get(file) or locators.setdefault(file, Locator(file, images_dir, depths_dir))
        yield parquet_row_to_sample(row, index, path=file, locator=locator, depth_polarity=depth_polarity,
                                    validate=validate)
