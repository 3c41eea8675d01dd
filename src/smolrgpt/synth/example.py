"""One example frame from the synthetic generator: RGB, 8-bit depth (bright = far), and the boxes of
its two most visible pallets with a distance question about them. Used by `smolrgpt hello` and the
web page's bundled examples."""
from __future__ import annotations

import numpy as np


def example_frame(seed: int = 0, width: int = 640, height: int = 360):
    """(rgb [H, W, 3] uint8, depth [H, W] uint8, question, boxes [[x1, y1, x2, y2], ...])."""
    from smolrgpt.synth import writer
    from smolrgpt.synth.render import render
    from smolrgpt.synth.scene import generate_scene

    scene = generate_scene(np.random.default_rng([seed, 7]), width, height)
    rendering = render(scene)
    depth8 = writer.encode_depth(rendering.depth)[0]
    boxes = []
    pallets = [o.instance_id for o in scene.objects if o.cls == "pallet"]
    for iid in sorted(pallets, key=lambda i: -int(rendering.visible_pixels[i]))[:2]:
        ys, xs = np.nonzero(rendering.instances == iid)
        if len(xs):
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
    question = "How far is the pallet <mask> from the pallet <mask>?" if len(boxes) == 2 else "Describe the scene."
    return np.ascontiguousarray(rendering.rgb), np.ascontiguousarray(depth8), question, boxes
