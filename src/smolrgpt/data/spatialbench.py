"""Reader for SpatialRGPT-Bench (1,406 QA about OpenImages/Omni3D frames, bright = NEAR depth).

Record: `{id, image_info: {file_path, height?, width?, ...}, text_q, conversations: [human, gpt],
bbox: [[x1, y1, x2, y2], ...], rle: [{size, counts}, ...], qa_info: {type, category}}`.

- The question is the human turn with one `<mask>` per region (`<mask> <depth>` pairs are folded into
  one `<mask>`, as for the Open Spatial Dataset: the processor adds its own depth token); the k-th tag
  is the k-th entry of `rle` (Region "rle") or, when there are no masks or `region_form="box"`, of
  `bbox` (Region "box", pixels).
- The image is `<images_root>/<image_info.file_path>`. Depth maps are not part of the benchmark (they
  come from a monocular model); with `depths_root` the depth is `<depths_root>/<file_path stem>.png`,
  otherwise None. Polarity "near_bright".
- `meta` keeps what scoring needs: `qa_info`, `gt_answer` (the gpt turn), `text_q` and `image_info`.
  `category` stays None: Sample.category is the Track 3 category, the benchmark's is in meta.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal

from smolrgpt.data.jsonarray import iter_json_array
from smolrgpt.data.llava import llava_turns, record_header
from smolrgpt.data.osd import merge_region_tags
from smolrgpt.data.sample import MASK_TAG, Region, Sample
from smolrgpt.errors import SampleError

DEPTH_POLARITY = "near_bright"
RegionForm = Literal["auto", "rle", "box"]


def _regions(record: dict, form: RegionForm, *, sample_id: str, source: str) -> list[Region]:
    rle, boxes = record.get("rle"), record.get("bbox")
    for key, value in (("rle", rle), ("bbox", boxes)):
        if value is not None and not isinstance(value, list):
            raise SampleError(f"'{key}' must be a list, got {type(value).__name__}", sample_id=sample_id, source=source)
    use_rle = form == "rle" or (form == "auto" and bool(rle))
    if use_rle:
        if not rle:
            raise SampleError("region_form='rle' but the record has no 'rle'", sample_id=sample_id, source=source)
        for k, entry in enumerate(rle):
            if not isinstance(entry, dict) or "size" not in entry or "counts" not in entry:
                raise SampleError(f"rle[{k}] must be an object with 'size' and 'counts'",
                                  sample_id=sample_id, source=source)
        return [Region("rle", entry) for entry in rle]
    regions = []
    for k, box in enumerate(boxes or []):
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise SampleError(f"bbox[{k}] must be [x1, y1, x2, y2] numbers, got {box!r}",
                              sample_id=sample_id, source=source)
        regions.append(Region("box", [float(v) for v in box]))
    return regions


def spatialbench_record_to_sample(record: Any, index: int, *, path: str | Path, images_root: str | Path,
                                  depths_root: str | Path | None = None,
                                  region_form: RegionForm = "auto") -> Sample:
    """One benchmark record -> Sample. Raises SampleError naming the record and the file."""
    source, sample_id = record_header(record, index, path)
    image_info = record.get("image_info")
    if not isinstance(image_info, dict) or not isinstance(image_info.get("file_path"), str):
        raise SampleError("'image_info' must be an object with a string 'file_path'", sample_id=sample_id, source=source)
    qa_info = record.get("qa_info")
    if not isinstance(qa_info, dict) or not isinstance(qa_info.get("type"), str) \
            or not isinstance(qa_info.get("category"), str):
        raise SampleError("'qa_info' must be an object with string 'type' and 'category'",
                          sample_id=sample_id, source=source)
    turns = [(merge_region_tags(q), a) for q, a in
             llava_turns(record.get("conversations"), sample_id=sample_id, source=source)]
    regions = _regions(record, region_form, sample_id=sample_id, source=source)
    tags = sum(q.count(MASK_TAG) for q, _ in turns)
    if tags != len(regions):
        raise SampleError(f"the question has {tags} {MASK_TAG} tags but the record has {len(regions)} regions",
                          sample_id=sample_id, source=source)
    file_path = image_info["file_path"]
    depth = None
    if depths_root is not None:
        depth = Path(depths_root) / PurePosixPath(file_path).with_suffix(".png")
    return Sample(
        id=sample_id,
        image=Path(images_root) / file_path,
        turns=turns,
        regions=regions,
        depth=depth,
        depth_polarity=DEPTH_POLARITY,
        source=source,
        meta={"index": index, "format": "spatialbench", "qa_info": dict(qa_info), "gt_answer": turns[0][1],
              "text_q": record.get("text_q"), "image_info": dict(image_info)},
    )


def iter_spatialbench(path: str | Path, *, images_root: str | Path, depths_root: str | Path | None = None,
                      region_form: RegionForm = "auto") -> Iterator[Sample]:
    """Stream the benchmark's Samples (image files are not opened here)."""
    for index, record in iter_json_array(path):
        yield spatialbench_record_to_sample(record, index, path=path, images_root=images_root,
                                            depths_root=depths_root, region_form=region_form)


def read_spatialbench(path: str | Path, **options) -> list[Sample]:
    return list(iter_spatialbench(path, **options))
