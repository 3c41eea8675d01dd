"""Reader for the Open Spatial Dataset (SpatialRGPT), `result_10_depth_convs.json` (stage 2).

The file is ONE JSON array of 31.9 GB: it is streamed element by element (`jsonarray`), never loaded.

Record: `{"filename", "conversations", "rle" and/or "bbox"}`. Conversations are multi-turn, human/gpt
alternating. Every region is written `<mask> <depth>` in the questions; each such pair becomes one
`<mask>` tag here (the processor adds its own depth token). The k-th tag across ALL turns is the k-th
entry of `rle`/`bbox` (the arrays repeat a region each time a turn mentions it again). Answers name
regions `Region [k]` with k counted within the turn (turn-local), as in the source: they are kept
verbatim.

Regions: `rle` entries become Region("rle") and `bbox` entries ([x1, y1, x2, y2], pixels) Region("box").
With both present, `region_form="auto"` prefers the masks (exact) and falls back to boxes.

Ids: the record's `id` when it has one, else `<filename>#<index>` (the file has no id and one image
can carry several records).

Paths: the image is `<images_dir>/<filename>`, with `image_ext` (".jpg", OpenImages) appended when
the filename has no extension. The depth map is `<depths_dir>/` + `depth_name.format(stem=...,
filename=...)`, default `"{stem}.png"`. Without `depths_dir`, depth is None (stage 2 needs it: the
processor then refuses the sample by name).

Depth polarity: "near_bright" (Depth-Anything output min-max scaled to uint8, bright = NEAR, the
opposite of the warehouse data; the depth transform flips it).
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal

from smolrgpt.data.jsonarray import iter_json_array
from smolrgpt.data.llava import llava_turns, record_source, require_object
from smolrgpt.data.sample import MASK_TAG, Region, Sample
from smolrgpt.errors import SampleError

DEPTH_POLARITY = "near_bright"
DEFAULT_DEPTH_NAME = "{stem}.png"
DEFAULT_IMAGE_EXT = ".jpg"

_MASK_DEPTH_PAIR = re.compile(r"<mask>\s*<depth>")
_DEPTH_TAG = "<depth>"


def merge_region_tags(text: str) -> str:
    """`<mask> <depth>` -> `<mask>`; a `<depth>` tag left alone is an error for the caller to report."""
    return _MASK_DEPTH_PAIR.sub(MASK_TAG, text)


def image_name(filename: str, image_ext: str = DEFAULT_IMAGE_EXT) -> str:
    return filename if PurePosixPath(filename).suffix else filename + image_ext


def _region_list(record: dict, key: str, kind: str, *, sample_id: str, source: str) -> list[Region] | None:
    entries = record.get(key)
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise SampleError(f"'{key}' must be a list, got {type(entries).__name__}", sample_id=sample_id, source=source)
    return [Region(kind, entry) for entry in entries]


def _pick_regions(record: dict, form: str, tags: int, *, sample_id: str, source: str) -> list[Region]:
    masks = _region_list(record, "rle", "rle", sample_id=sample_id, source=source)
    boxes = _region_list(record, "bbox", "box", sample_id=sample_id, source=source)
    if form == "rle":
        chosen = masks
    elif form == "bbox":
        chosen = boxes
    else:
        # Prefer masks, but only when they are complete: a partial rle list next to a complete bbox
        # list would otherwise silently shift regions.
        chosen = masks if masks is not None and (len(masks) == tags or boxes is None) else boxes
    if chosen is None:
        if tags == 0:
            return []
        wanted = {"rle": "'rle'", "bbox": "'bbox'"}.get(form, "'rle' or 'bbox'")
        raise SampleError(f"the conversation has {tags} regions but the record has no {wanted}",
                          sample_id=sample_id, source=source)
    return chosen


def osd_record_to_sample(record: Any, index: int, *, path: str | Path, images_dir: str | Path,
                         depths_dir: str | Path | None = None, depth_name: str = DEFAULT_DEPTH_NAME,
                         image_ext: str = DEFAULT_IMAGE_EXT, region_form: Literal["auto", "rle", "bbox"] = "auto",
                         validate: bool = True) -> Sample:
    """One OSD record -> Sample. Raises SampleError naming the record and the file."""
    source = record_source(path, index)
    require_object(record, index, source)
    filename = record.get("filename")
    if not isinstance(filename, str) or not filename:
        raise SampleError("missing or invalid 'filename'", sample_id=f"#{index}", source=source)
    sample_id = str(record["id"]) if record.get("id") is not None else f"{filename}#{index}"
    raw_turns = llava_turns(record.get("conversations"), sample_id=sample_id, source=source)
    turns = [(merge_region_tags(q), a) for q, a in raw_turns]
    if validate and any(_DEPTH_TAG in q for q, _ in turns):
        raise SampleError(f"a {_DEPTH_TAG} tag that does not follow a {MASK_TAG} tag", sample_id=sample_id,
                          source=source)
    tags = sum(q.count(MASK_TAG) for q, _ in turns)
    regions = _pick_regions(record, region_form, tags, sample_id=sample_id, source=source)
    if validate and len(regions) != tags:
        raise SampleError(f"the conversation has {tags} {MASK_TAG} tags but the record has {len(regions)} "
                          f"{regions[0].kind if regions else 'region'} entries", sample_id=sample_id, source=source)
    name = image_name(filename, image_ext)
    stem = PurePosixPath(name).stem
    depth = Path(depths_dir) / depth_name.format(stem=stem, filename=filename) if depths_dir is not None else None
    return Sample(
        id=sample_id,
        image=Path(images_dir) / name,
        turns=turns,
        regions=regions,
        depth=depth,
        depth_polarity=DEPTH_POLARITY,
        source=source,
        meta={"index": index, "format": "osd", "region_numbering": "turn_local"},
    )


def iter_osd(path: str | Path, *, images_dir: str | Path, depths_dir: str | Path | None = None,
             depth_name: str = DEFAULT_DEPTH_NAME, image_ext: str = DEFAULT_IMAGE_EXT,
             region_form: Literal["auto", "rle", "bbox"] = "auto", validate: bool = True,
             chunk_bytes: int = 1 << 20) -> Iterator[Sample]:
    """Stream the Samples of an OSD JSON array with bounded memory (about one chunk plus one record)."""
    if region_form not in ("auto", "rle", "bbox"):
        raise ValueError(f"region_form must be 'auto', 'rle' or 'bbox', got {region_form!r}")
    for index, record in iter_json_array(path, chunk_bytes=chunk_bytes):
        yield osd_record_to_sample(record, index, path=path, images_dir=images_dir, depths_dir=depths_dir,
                                   depth_name=depth_name, image_ext=image_ext, region_form=region_form,
                                   validate=validate)
