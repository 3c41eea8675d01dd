"""The one mask pipeline: every region form -> a float weight map on the pooling grid.

Regions are reduced to the grid (64x64 for the paper model) as soon as they are loaded, so batches never
carry full-resolution float masks (a 15-mask 1080p sample would be ~124 MB). The reduction has named
modes, a processor setting saved with each checkpoint:
  "area"      ours: exact area averaging; a small region can never vanish;
  "bilinear"  the authors' (what their released weights learned on): `F.interpolate` of the binary
              full-resolution mask, bilinear, align_corners=False, no antialiasing, so a small region can
              become an all-zero weight map (a zero region vector); kept as they did it.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as coco_mask

from smolrgpt.data.sample import Region
from smolrgpt.errors import ConfigError


MASK_REDUCTIONS = ("area", "bilinear")


class RegionDecodeError(ValueError):
    """A region cannot be decoded or does not fit its image; the caller adds the sample and file."""


def _number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def parse_region(spec, where: str = "region", masks=None,
                 kinds: str = "rle, box, polygon, mask") -> Region:
    """The one region parser: a Region, {"rle": {...}}, {"box": [x1, y1, x2, y2]}, {"polygon": [[x, y, ...]]},
    {"mask": ...}, a bare COCO RLE dict or a 4-number box -> a checked Region.

    masks: None for Python callers, whose masks are arrays or image paths used as they are (also given
    bare); otherwise a function (kind, data) -> Region for every other key (a request's mask images, which
    never name files). kinds: the keys listed in the "exactly one key" message."""
    if isinstance(spec, Region):
        return spec
    if masks is None and isinstance(spec, (np.ndarray, str, Path)):
        return Region("mask", spec)
    if isinstance(spec, (list, tuple)):
        if len(spec) == 4 and all(_number(v) for v in spec):
            return Region("box", [float(v) for v in spec])
        raise RegionDecodeError(f"{where}: a list region must be a box [x1, y1, x2, y2] of 4 numbers")
    if not isinstance(spec, dict):
        raise RegionDecodeError(f"{where}: a region must be an object such as {{\"box\": [x1, y1, x2, y2]}}, "
                                f"got {type(spec).__name__}")
    if "counts" in spec and "size" in spec and len(spec) == 2:
        spec = {"rle": spec}
    if len(spec) != 1:
        raise RegionDecodeError(f"{where}: a region needs exactly one key of {kinds}; got {sorted(spec)}")
    (kind, data), = spec.items()
    if kind == "box":
        if not (isinstance(data, (list, tuple)) and len(data) == 4 and all(_number(v) for v in data)):
            raise RegionDecodeError(f"{where} (box): a box must be [x1, y1, x2, y2], 4 numbers")
        return Region("box", [float(v) for v in data])
    if kind == "rle":
        if not (isinstance(data, dict) and set(data) == {"size", "counts"}):
            raise RegionDecodeError(f"{where} (rle): RLE must be an object with exactly 'size' and 'counts'")
        size, counts = data["size"], data["counts"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_int(v) for v in size)):
            raise RegionDecodeError(f"{where} (rle): size must be [height, width]")
        if isinstance(counts, str):
            if not counts.isascii():
                raise RegionDecodeError(f"{where} (rle): compressed counts must be an ASCII string")
        elif isinstance(counts, bytes) and masks is None:
            pass  # pycocotools' own encoding, from Python callers
        elif not (isinstance(counts, list) and all(_int(c) for c in counts)):
            raise RegionDecodeError(f"{where} (rle): counts must be a compressed string or a list of run lengths")
        return Region("rle", {"size": [int(v) for v in size], "counts": counts})
    if kind == "polygon":
        polys = data if isinstance(data, list) and data and isinstance(data[0], list) else [data]
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_number(v) for v in p)
                   for p in polys):
            raise RegionDecodeError(f"{where} (polygon): a polygon is a flat list [x0, y0, x1, y1, ...] of at "
                                    "least 3 points (or a list of such lists)")
        return Region("polygon", [[float(v) for v in p] for p in polys])
    if masks is not None:
        return masks(kind, data)
    if kind == "mask":
        return Region("mask", data)
    raise RegionDecodeError(f"{where}: unknown region kind {kind!r}; use one of rle, box, polygon, mask")


def check_mask_reduction(mode: str) -> str:
    if mode not in MASK_REDUCTIONS:
        raise ConfigError(f"unknown mask reduction {mode!r}; choose one of {', '.join(MASK_REDUCTIONS)}")
    return mode


def _rle_to_mask(rle: dict, image_size: tuple[int, int]) -> np.ndarray:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RegionDecodeError("RLE must be a dict with 'size' and 'counts'")
    try:
        h, w = (int(v) for v in rle["size"])
    except (TypeError, ValueError):
        raise RegionDecodeError(f"RLE size {rle['size']!r} is not [height, width]") from None
    if (h, w) != image_size:
        raise RegionDecodeError(f"mask size {h}x{w} differs from the image size {image_size[0]}x{image_size[1]}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE: run lengths, column-major, starting with zeros
        if sum(counts) != h * w or any((not isinstance(c, int)) or c < 0 for c in counts):
            raise RegionDecodeError(f"uncompressed RLE run lengths do not add up to {h}x{w}")
        encoded = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, (str, bytes)):
        encoded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise RegionDecodeError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    try:
        decoded = coco_mask.decode(encoded)
    except Exception as exc:  # pycocotools raises bare exceptions on corrupt strings
        raise RegionDecodeError(f"undecodable RLE ({exc})") from None
    if int(coco_mask.area(encoded)) != int(decoded.sum()) or decoded.shape != (h, w):
        raise RegionDecodeError("undecodable RLE (decoded area is inconsistent)")
    return decoded


def _array_mask(data, image_size: tuple[int, int]) -> np.ndarray:
    if isinstance(data, (str, Path)):
        try:
            with Image.open(data) as img:
                arr = np.asarray(img.convert("L") if img.mode not in ("L", "1", "I", "I;16", "F") else img)
        except (OSError, ValueError) as exc:
            raise RegionDecodeError(f"cannot read mask image {str(data)!r} ({exc})") from None
    elif isinstance(data, Image.Image):
        arr = np.asarray(data.convert("L") if data.mode not in ("L", "1", "I", "I;16", "F") else data)
    else:
        arr = np.asarray(data)
    if arr.ndim == 3:  # an RGB(A) array: the same rule as mask image files (luminance, alpha ignored)
        arr = np.asarray(Image.fromarray(arr.astype(np.uint8)).convert("L"))
    if arr.ndim != 2:
        raise RegionDecodeError(f"a mask must be 2-D, got shape {arr.shape}")
    if arr.shape != tuple(image_size):
        raise RegionDecodeError(
            f"mask size {arr.shape[0]}x{arr.shape[1]} differs from the image size {image_size[0]}x{image_size[1]}"
        )
    return (arr != 0).astype(np.uint8)


def _polygon_mask(polygons, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
        raise RegionDecodeError("a polygon needs at least 3 (x, y) points as a flat list")
    points = np.asarray([v for p in polygons for v in p], np.float64)
    reach = 2 * max(h, w)  # pycocotools walks every edge pixel: coordinates of 1e9 crash the process
    if not np.isfinite(points).all() or np.abs(points).max() > reach:
        raise RegionDecodeError(f"polygon coordinates must be finite numbers between -{reach} and {reach} "
                               "(twice the longer side of the image)")
    rles = coco_mask.frPyObjects([list(map(float, p)) for p in polygons], h, w)
    return coco_mask.decode(coco_mask.merge(rles))


def _box_coverage_1d(lo: float, hi: float, length: int, grid: int) -> np.ndarray:
    """Fraction of each of `grid` equal cells of [0, length) covered by [lo, hi)."""
    edges = np.linspace(0.0, float(length), grid + 1)
    overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    return overlap / (edges[1:] - edges[:-1])


def _box_grid(box, image_size: tuple[int, int], grid: int) -> np.ndarray:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise RegionDecodeError(f"a box must be [x1, y1, x2, y2], got {box!r}") from None
    h, w = image_size
    x1, x2 = max(0.0, x1), min(float(w), x2)
    y1, y2 = max(0.0, y1), min(float(h), y2)
    if not (x2 > x1 and y2 > y1):
        raise RegionDecodeError(f"box {list(box)!r} is empty inside the {h}x{w} image")
    # Exact area coverage computed analytically: a box needs no full-resolution raster.
    return np.outer(_box_coverage_1d(y1, y2, h, grid), _box_coverage_1d(x1, x2, w, grid)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _area_weights(length: int, grid: int) -> np.ndarray:
    """[grid, length] matrix: share of pixel i inside cell g, divided by the cell's length."""
    edges = np.linspace(0.0, float(length), grid + 1)
    pixel = np.arange(length, dtype=np.float64)
    overlap = np.clip(np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel), 0.0, None)
    return (overlap / (edges[1:] - edges[:-1])[:, None]).astype(np.float32)


def area_average(mask: np.ndarray, grid: int) -> np.ndarray:
    """Exact area average of a binary mask onto a grid x grid map, fractional cell borders included
    (1080/64 and 1920/64 are not integers; image resizers' box filters only approximate this).
    Written as two small matrix products: rows then columns."""
    h, w = mask.shape
    rows = _area_weights(h, grid) @ mask.astype(np.float32)
    return (rows @ _area_weights(w, grid).T).clip(0.0, 1.0)


def bilinear_reduce(mask: np.ndarray, grid: int) -> np.ndarray:
    """The authors' reduction: the binary mask bilinearly resized to grid x grid (align_corners=False,
    no antialiasing: each output cell reads the 2x2 pixels around its centre only)."""
    full = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return F.interpolate(full, size=(grid, grid), mode="bilinear", align_corners=False, antialias=False)[0, 0].numpy()


def _never_empty(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A non-empty region must keep some weight; float rounding could in principle lose a single pixel
    of a 4K mask, so put it back on the cell holding the region's first pixel."""
    if weights.sum() > 0:
        return weights
    ys, xs = np.nonzero(mask)
    g = weights.shape[0]
    weights = weights.copy()
    weights[min(g - 1, ys[0] * g // mask.shape[0]), min(g - 1, xs[0] * g // mask.shape[1])] = 1.0 / mask.size
    return weights


def full_resolution_mask(region: Region, image_size: tuple[int, int]) -> np.ndarray:
    """The binary uint8 mask of a region at the image's resolution (for overlays and checks)."""
    if region.kind == "rle":
        return _rle_to_mask(region.data, image_size)
    if region.kind == "mask":
        return _array_mask(region.data, image_size)
    if region.kind == "polygon":
        return _polygon_mask(region.data, image_size)
    if region.kind == "box":
        h, w = image_size
        x1, y1, x2, y2 = (float(v) for v in region.data)
        out = np.zeros((h, w), np.uint8)
        out[max(0, int(np.floor(y1))):int(np.ceil(min(h, y2))), max(0, int(np.floor(x1))):int(np.ceil(min(w, x2)))] = 1
        return out
    raise RegionDecodeError(f"unknown region kind {region.kind!r}")


# The grids of the most recent compressed-RLE regions. The questions about one frame name the same few
# objects again and again (a demo frame: 25 questions, about 116 masks, a few dozen distinct objects), and
# decoding plus area-averaging them was three quarters of building a preprocessing cache.
RLE_GRID_MEMO_SIZE = 512
_rle_grids: OrderedDict = OrderedDict()
_rle_grids_lock = threading.Lock()


def _memo_key(region: Region, image_size: tuple[int, int], grid: int, reduction: str):
    data = region.data
    if region.kind != "rle" or not isinstance(data, dict) or not isinstance(data.get("counts"), (str, bytes)):
        return None
    return data["counts"], repr(data.get("size")), tuple(image_size), int(grid), reduction


def region_to_grid(region: Region, image_size: tuple[int, int], grid: int, reduction: str = "area") -> np.ndarray:
    """A region as a float32 [grid, grid] weight map in [0, 1]: covered-area fractions ("area", never all
    zero) or the authors' bilinear resize ("bilinear"). The map of a compressed RLE may be shared with
    earlier calls: it is read-only."""
    check_mask_reduction(reduction)
    if region.kind == "box" and reduction == "area":
        return _box_grid(region.data, image_size, grid)
    key = _memo_key(region, image_size, grid, reduction)
    if key is not None:
        with _rle_grids_lock:
            if key in _rle_grids:
                _rle_grids.move_to_end(key)
                return _rle_grids[key]
    if region.kind == "box":
        _box_grid(region.data, image_size, 1)  # the same checks (a box, not empty inside the image) as "area"
    mask = full_resolution_mask(region, image_size)
    if not mask.any():
        raise RegionDecodeError("the region is empty (no pixel inside)")
    weights = _never_empty(area_average(mask, grid), mask) if reduction == "area" else bilinear_reduce(mask, grid)
    if key is not None:  # only maps that decoded without error are kept
        weights.setflags(write=False)
        with _rle_grids_lock:
            _rle_grids[key] = weights
            if len(_rle_grids) > RLE_GRID_MEMO_SIZE:
                _rle_grids.popitem(last=False)
    return weights


def regions_to_grid(regions: list[Region], image_size: tuple[int, int], grid: int,
                    reduction: str = "area") -> np.ndarray:
    """All regions of a sample as a float32 [R, grid, grid] array. Errors say which region (0-based)."""
    check_mask_reduction(reduction)
    out = np.zeros((len(regions), grid, grid), np.float32)
    for k, region in enumerate(regions):
        try:
            out[k] = region_to_grid(region, image_size, grid, reduction)
        except RegionDecodeError as exc:
            raise RegionDecodeError(f"region {k} ({region.kind}): {exc}") from None
    return out
