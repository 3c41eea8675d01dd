"""The RGB transform and THE depth transform, shared by training, evaluation and serving.

Both resize to the encoder's square input (aspect ratio squashed, as the paper does). RGB uses PIL's
antialiased bilinear filter and scales to [-1, 1]. The depth transform has named modes, a processor
setting saved with each checkpoint:
  "smolrgpt"            ours: relative depth in [0, 1] with bright = far (the warehouse convention)
                        whatever its source, bilinear, then [-1, 1] like RGB;
  "authors-training"    what the authors' weights were trained on: the file as PIL `convert("RGB")` gives
                        it, NEAREST resize, [0, 1] without normalisation;
  "authors-submission"  the authors' submission script: the depth file through the RGB transform.
The two authors' modes take the file's pixels as they are (no polarity flip, no min-max scaling of
16-bit maps), because that is what the authors' code fed their model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from smolrgpt.errors import ConfigError

DEPTH_POLARITIES = ("far_bright", "near_bright")
DEPTH_TRANSFORMS = ("smolrgpt", "authors-training", "authors-submission")


class ImageDecodeError(ValueError):
    """An image or depth map cannot be read or has an unusable format."""


def open_image(source) -> Image.Image:
    """A PIL image from a path, a PIL image or an array (H, W[, C])."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        try:
            return Image.fromarray(source)
        except TypeError as exc:
            raise ImageDecodeError(f"unsupported array of dtype {source.dtype} and shape {source.shape} ({exc})") from None
    if isinstance(source, (bytes, bytearray)):
        import io

        source = io.BytesIO(source)
    elif not isinstance(source, (str, Path)) and not hasattr(source, "read"):
        raise ImageDecodeError(f"cannot read an image from a {type(source).__name__}")
    try:
        img = Image.open(source)
        img.load()
        return img
    except FileNotFoundError:
        raise ImageDecodeError(f"file not found: {source}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"unreadable image {source} ({exc})") from None


def image_size_of(source) -> tuple[int, int]:
    """(height, width) of an image, reading only the header when given a path."""
    if isinstance(source, np.ndarray):
        return int(source.shape[0]), int(source.shape[1])
    if isinstance(source, Image.Image):
        return source.height, source.width
    try:
        with Image.open(source) as img:
            return img.height, img.width
    except FileNotFoundError:
        raise ImageDecodeError(f"file not found: {source}") from None
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"unreadable image {source} ({exc})") from None


def _to_unit_range(img: Image.Image, size: int) -> np.ndarray:
    """Resize a single-channel float image, float32 [1, size, size]."""
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)[None]


def rgb_resized(source, size: int) -> np.ndarray:
    """RGB resized to size x size, uint8 [3, size, size] (what a preprocessing cache stores)."""
    img = open_image(source)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


def rgb_normalize(resized: np.ndarray) -> np.ndarray:
    """uint8 [3, S, S] -> float32 in [-1, 1] (mean 0.5, std 0.5)."""
    return (resized.astype(np.float32) / 255.0 - 0.5) / 0.5


def rgb_transform(source, size: int) -> np.ndarray:
    """RGB -> float32 [3, size, size] in [-1, 1]."""
    return rgb_normalize(rgb_resized(source, size))


def depth_to_unit(source, polarity: str = "far_bright") -> np.ndarray:
    """Any depth map -> float32 [H, W] relative depth in [0, 1], bright = far.

    8-bit maps are relative already (the warehouse PNGs, Depth-Anything exports): value / 255.
    16-bit and float maps are usually metric or disparity with arbitrary scale: min-max normalised per
    image, non-finite values treated as the far end. `near_bright` sources (e.g. Open Spatial Dataset)
    are flipped so the model always sees one convention.
    """
    if polarity not in DEPTH_POLARITIES:
        raise ImageDecodeError(f"depth polarity must be one of {DEPTH_POLARITIES}, got {polarity!r}")
    if isinstance(source, np.ndarray):
        arr = source
    else:
        img = open_image(source)
        if img.mode in ("RGB", "RGBA", "P", "LA"):
            img = img.convert("L")  # 3-channel visualisations of relative depth: take the luminance
        arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ImageDecodeError(f"a depth map must be single-channel, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        unit = arr.astype(np.float32) / 255.0
    elif arr.dtype == bool:
        raise ImageDecodeError("a depth map cannot be boolean")
    else:
        values = arr.astype(np.float32)
        finite = np.isfinite(values)
        if not finite.any():
            raise ImageDecodeError("the depth map has no finite value")
        lo, hi = float(values[finite].min()), float(values[finite].max())
        unit = np.where(finite, (values - lo) / (hi - lo) if hi > lo else 0.0, 1.0).astype(np.float32)
    if polarity == "near_bright":
        unit = 1.0 - unit
    return unit


def check_depth_transform(mode: str) -> str:
    if mode not in DEPTH_TRANSFORMS:
        raise ConfigError(f"unknown depth transform {mode!r}; choose one of {', '.join(DEPTH_TRANSFORMS)}")
    return mode


_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def _as_pil_rgb(source) -> Image.Image:
    """The depth file as the authors' code read it: PIL `convert("RGB")` of an 8-bit image. PIL would
    saturate a 16-bit or float map to 255, a silently wrong input, so those are refused."""
    if isinstance(source, np.ndarray) and source.dtype != np.uint8:
        raise ImageDecodeError(f"the authors' depth transforms read 8-bit depth maps; got an array of dtype "
                               f"{source.dtype} (use depth_transform 'smolrgpt', or convert it to 8-bit first)")
    img = open_image(source)
    if img.mode not in _EIGHT_BIT_MODES:
        raise ImageDecodeError(f"the authors' depth transforms read 8-bit depth maps; got a {img.mode} image "
                               "(use depth_transform 'smolrgpt', or convert it to 8-bit first)")
    return img if img.mode == "RGB" else img.convert("RGB")


def depth_resized(source, size: int, polarity: str = "far_bright", mode: str = "smolrgpt") -> np.ndarray:
    """The resized depth before normalisation (what a preprocessing cache stores):
    "smolrgpt": relative depth (bright = far), float32 [size, size] in [0, 1];
    the authors' modes: uint8 [3, size, size] (NEAREST for training, bilinear for the submission)."""
    check_depth_transform(mode)
    if mode == "authors-training":
        resized = np.asarray(_as_pil_rgb(source).resize((size, size), Image.Resampling.NEAREST)).transpose(2, 0, 1)
        return np.ascontiguousarray(resized)
    if mode == "authors-submission":
        return np.ascontiguousarray(rgb_resized(_as_pil_rgb(source), size))
    unit = depth_to_unit(source, polarity)
    return _to_unit_range(Image.fromarray(unit, mode="F"), size)[0]


def depth_normalize(resized: np.ndarray, mode: str = "smolrgpt") -> np.ndarray:
    """`depth_resized`'s output -> float32 [3, S, S], the encoder's input: [-1, 1] for "smolrgpt" and
    "authors-submission", [0, 1] for "authors-training"."""
    check_depth_transform(mode)
    if mode == "authors-training":
        return resized.astype(np.float32) / 255.0
    if mode == "authors-submission":
        return rgb_normalize(resized)
    return np.repeat(((resized.astype(np.float32) - 0.5) / 0.5)[None], 3, axis=0)


def depth_transform(source, size: int, polarity: str = "far_bright", mode: str = "smolrgpt") -> np.ndarray:
    """THE depth transform: a depth map -> float32 [3, size, size] for the shared encoder, in the given mode."""
    return depth_normalize(depth_resized(source, size, polarity, mode), mode)
