"""Files in the real Track 3 layout, written atomically.

```
DIR/{split}/images/000012.png          RGB
DIR/{split}/depths/000012_depth.png    8-bit "L", bright = far (like the real files)
DIR/{split}/scenes/000012.json         camera, depth scale, every object in 3-D, how each answer was derived,
                                       and the frame's full records (what a resumed run reuses; for the
                                       test split this file therefore holds the answers too)
DIR/{split}/instances/000012.png       16-bit instance ids (only with --instance-maps)
DIR/train.json DIR/val.json DIR/test.json DIR/test_answers.json
```
The depth PNG stores z-depth linearly between a per-frame near and far plane (in the scene file):
metres = near_m + value / 255 * (far_m - near_m), so it converts back within half a step.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from smolrgpt.synth.questions import QA
from smolrgpt.synth.render import Rendering
from smolrgpt.synth.scene import BUFFER, PALLET, TRANSPORTER, Scene

SCENE_FORMAT = "smolrgpt-synth-scene/1"
CONVENTIONS = {
    "camera": "pinhole, OpenCV axes (x right, y down, z forward); p_cam = world_to_camera @ (p_world - position); "
              "u = fx * x / z + cx, v = fy * y / z + cy",
    "left_right": "image x of the projected 3-D box centre; 'left' means a smaller x",
    "distance": "Euclidean distance between 3-D box centres in metres, rounded to 2 decimals; 0 when the "
                "object's centre lies inside the buffer's floor rectangle",
    "closest": "smallest centre distance",
    "count": "pallets whose centre lies inside the buffer's floor rectangle",
    "box": "center is the middle of the object's 3-D box (loads included); size is along the object's own x, y, z "
           "after rotating by yaw (radians, counter-clockwise about +z); buffers are flat (size z = 0, center z = 0)",
}


# ------------------------------------------------------------------------------------------------ atomic
def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------- depth
def encode_depth(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """8-bit depth, bright = far, linear between near/far planes rounded outwards to 0.1 m."""
    near = math.floor(float(depth.min()) * 10) / 10
    far = math.ceil(float(depth.max()) * 10) / 10
    if far <= near:
        far = near + 0.1
    value = np.rint((depth - near) / (far - near) * 255)
    return np.clip(value, 0, 255).astype(np.uint8), near, far


def decode_depth(value: np.ndarray, near: float, far: float) -> np.ndarray:
    return near + value.astype(np.float64) / 255.0 * (far - near)


# ---------------------------------------------------------------------------------------------- records
def encode_mask(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def frame_records(qas: list[QA], ids: list[str], image_name: str, instances: np.ndarray) -> list[dict]:
    """Records with every field of the real train/val files, in the real key order."""
    cache: dict[int, dict] = {}
    out = []
    for qa, qid in zip(qas, ids):
        rles = []
        for inst in qa.regions:
            if inst not in cache:
                cache[inst] = encode_mask(instances == inst)
            rles.append(cache[inst])
        out.append({"id": qid, "image": image_name,
                    "conversations": [{"from": "human", "value": qa.question}, {"from": "gpt", "value": qa.answer}],
                    "rle": rles, "category": qa.category, "normalized_answer": qa.normalized,
                    "freeform_answer": qa.answer})
    return out


def test_record(record: dict) -> dict:
    """The test split keeps only what the real test.json has: no answers, no category."""
    return {"id": record["id"], "image": record["image"], "conversations": record["conversations"][:1],
            "rle": record["rle"]}


def answer_record(record: dict) -> dict:
    return {"id": record["id"], "category": record["category"], "normalized_answer": record["normalized_answer"]}


# ------------------------------------------------------------------------------------------------- scene
def _floats(values) -> list[float]:
    return [float(v) for v in values]


def scene_metadata(scene: Scene, rendering: Rendering, depth_range: tuple[float, float], *, split: str,
                   frame: int, image_name: str, depth_name: str, qas: list[QA], ids: list[str]) -> dict:
    cam = scene.camera
    objects = []
    for obj in scene.objects:
        entry = {"instance_id": obj.instance_id, "class": obj.cls, "center": _floats(obj.center),
                 "size": _floats(obj.size), "yaw": float(obj.yaw),
                 "visible_pixels": int(rendering.visible_pixels[obj.instance_id]),
                 "silhouette_pixels": int(rendering.silhouette_pixels[obj.instance_id])}
        if obj.cls == PALLET:
            entry["loaded"] = bool(obj.loaded)
            entry["buffer_id"] = obj.buffer_id
        elif obj.cls == TRANSPORTER:
            entry["carrying"] = bool(obj.carrying)
        elif obj.cls == BUFFER:
            entry["paint_color"] = _floats(obj.paint["color"])
        objects.append(entry)
    rotation = cam.rotation
    return {
        "format": SCENE_FORMAT, "split": split, "frame": frame, "image": image_name, "depth": depth_name,
        "image_size": {"width": cam.width, "height": cam.height},
        "camera": {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "hfov_deg": float(cam.hfov_deg),
                   "position": _floats(cam.position), "world_to_camera": [_floats(r) for r in rotation],
                   "translation": _floats(-rotation @ cam.position), "heading": float(cam.heading),
                   "pitch": float(cam.pitch), "roll": float(cam.roll)},
        "depth_png": {"kind": "z-depth along the optical axis", "polarity": "far_bright", "near_m": depth_range[0],
                      "far_m": depth_range[1], "formula": "metres = near_m + value / 255 * (far_m - near_m)",
                      "max_error_m": (depth_range[1] - depth_range[0]) / 510},
        "room": {"half_x": float(scene.room_half[0]), "half_y": float(scene.room_half[1]), "height": float(scene.room_height)},
        "light": {"direction": _floats(scene.light["direction"])},
        "conventions": CONVENTIONS,
        "objects": objects,
        "questions": [{"id": qid, "category": qa.category, "family": qa.family, "regions": list(qa.regions),
                       "params": qa.params, "normalized_answer": qa.normalized} for qa, qid in zip(qas, ids)],
    }


def instance_png(instances: np.ndarray) -> bytes:
    return png_bytes(instances.astype(np.uint16))
