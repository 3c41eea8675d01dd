"""Numbered region overlays: the one drawing routine used by `ask --show`, evaluation galleries and reports."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from smolrgpt.data.sample import Region
from smolrgpt.processing.images import open_image
from smolrgpt.processing.regions import full_resolution_mask

# Distinct, colour-blind-friendly colours (Okabe-Ito), cycled for more regions.
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (255, 255, 255)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without sized default fonts
        return ImageFont.load_default()


def draw_regions(image, regions: list[Region], alpha: float = 0.45, max_side: int | None = 960) -> Image.Image:
    """The image with each region tinted in its colour and labelled with its index at its centroid."""
    base = open_image(image).convert("RGB")
    size = (base.height, base.width)
    canvas = np.asarray(base, dtype=np.float32).copy()
    centres = []
    for k, region in enumerate(regions):
        mask = full_resolution_mask(region, size).astype(bool)
        colour = np.asarray(PALETTE[k % len(PALETTE)], np.float32)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour
        ys, xs = np.nonzero(mask)
        centres.append((float(xs.mean()), float(ys.mean())) if len(xs) else None)
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
        canvas[edge] = colour
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    scale = 1.0
    if max_side and max(out.size) > max_side:
        scale = max_side / max(out.size)
        out = out.resize((round(out.width * scale), round(out.height * scale)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(out)
    font = _font(max(12, out.height // 30))
    for k, centre in enumerate(centres):
        if centre is None:
            continue
        x, y = centre[0] * scale, centre[1] * scale
        label = str(k)
        box = draw.textbbox((x, y), label, font=font, anchor="mm")
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
        draw.text((x, y), label, fill=PALETTE[k % len(PALETTE)], font=font, anchor="mm")
    return out
