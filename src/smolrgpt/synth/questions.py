"""Questions of the four Track 3 categories, answered from the 3-D scene.

Geometry conventions (the metadata records them, the tests re-derive every answer from them):
- left/right, leftmost/rightmost/middle: image x of the projected 3-D box centre ("from this viewpoint");
  a question is only asked when the gap is clear (`lr_margin` pixels) and the visible-mask centroids
  agree, so what the image shows and the 3-D truth never disagree.
- distance: Euclidean distance between 3-D box centres (a buffer's centre lies on the floor), rounded to
  2 decimals; exactly 0 when the object's centre lies inside the buffer's painted rectangle.
- closest: the same centre distance, with a clear margin between the first and the second candidate.
- count: pallets whose centre lies inside the chosen buffer; every one of them must be visible and listed.
Wording comes from templates.py (many variants per family).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smolrgpt.synth.render import Rendering
from smolrgpt.synth.scene import BUFFER, PALLET, SHELF, TRANSPORTER, Scene, SceneObject, point_in_rect
from smolrgpt.synth import templates as T

CATEGORY_SHARE = {"left_right": 0.139, "count": 0.148, "distance": 0.493, "mcq": 0.221}  # real train shares
# Count and left/right questions fail more often (a hidden pallet, no clear order), so they are drawn a little
# more often than their share; with these weights the produced mix is within about 1 point of CATEGORY_SHARE.
DRAW_WEIGHTS = {"left_right": 0.15, "count": 0.18, "distance": 0.465, "mcq": 0.205}
MIN_VISIBLE_FRACTION = 0.003    # of the image: a region smaller than this is never asked about (real: >= ~0.4%)
MIN_UNOCCLUDED = 0.2            # visible pixels / pixels it would cover if nothing were in front
MAX_MASKS = 15
MAX_DISTANCE_M = 18.4           # the largest distance answer of the real val split


@dataclass
class QA:
    category: str
    family: str
    question: str
    answer: str
    normalized: str | int | float
    regions: list[int]                          # instance ids, in <mask> order
    params: dict = field(default_factory=dict)  # what was asked, for re-deriving the answer


class View:
    """What the camera shows of each object: which ones may be asked about, and where they appear."""

    def __init__(self, scene: Scene, rendering: Rendering):
        cam = scene.camera
        self.scene = scene
        self.lr_margin = 0.025 * cam.width
        centres = np.array([o.center for o in scene.objects])
        uv, z = cam.project(centres)
        min_px = MIN_VISIBLE_FRACTION * cam.width * cam.height
        self.u = {o.instance_id: float(uv[i, 0]) for i, o in enumerate(scene.objects)}
        self.centroid_u = {o.instance_id: float(rendering.centroids[o.instance_id, 0]) for o in scene.objects}
        self.visible: dict[str, list[SceneObject]] = {}
        for i, o in enumerate(scene.objects):
            px = rendering.visible_pixels[o.instance_id]
            sil = max(int(rendering.silhouette_pixels[o.instance_id]), 1)
            if z[i] > 0 and px >= min_px and px / sil >= MIN_UNOCCLUDED:
                self.visible.setdefault(o.cls, []).append(o)

    def of(self, cls: str) -> list[SceneObject]:
        return list(self.visible.get(cls, []))

    def clearly_ordered(self, a: SceneObject, b: SceneObject) -> bool:
        du = self.u[b.instance_id] - self.u[a.instance_id]
        dc = self.centroid_u[b.instance_id] - self.centroid_u[a.instance_id]
        return abs(du) >= self.lr_margin and du * dc > 0

    def extreme(self, objs: list[SceneObject], which: str) -> SceneObject | None:
        """leftmost / rightmost / middle by image x, or None when the choice is not clear."""
        order = sorted(objs, key=lambda o: self.u[o.instance_id])
        if which == "middle":
            if len(order) % 2 == 0:
                return None
            k = len(order) // 2
            ok = self.clearly_ordered(order[k - 1], order[k]) and self.clearly_ordered(order[k], order[k + 1])
            return order[k] if ok else None
        if which == "rightmost":
            order = order[::-1]
        return order[0] if len(order) >= 2 and self.clearly_ordered(order[0], order[1]) else None


def centre_distance(a: SceneObject, b: SceneObject) -> float:
    return float(np.linalg.norm(a.center - b.center))


def inside_buffer(obj: SceneObject, buf: SceneObject) -> bool:
    c = obj.center
    return point_in_rect(c[0], c[1], (buf.x, buf.y, buf.half_extent[0], buf.half_extent[1], buf.yaw))


def object_distance(obj: SceneObject, other: SceneObject) -> float | None:
    """The answer to "how far is obj from other", or None beyond the range the real answers cover."""
    if other.cls == BUFFER and obj.cls != BUFFER and inside_buffer(obj, other):
        return 0.0
    d = round(centre_distance(obj, other), 2)
    return d if d <= MAX_DISTANCE_M else None


def clear_closest(objs: list[SceneObject], to: SceneObject) -> SceneObject | None:
    if not objs:
        return None
    ranked = sorted(objs, key=lambda o: centre_distance(o, to))
    if len(ranked) == 1:
        return ranked[0]
    d0, d1 = centre_distance(ranked[0], to), centre_distance(ranked[1], to)
    return ranked[0] if d1 - d0 >= max(0.3, 0.08 * d0) else None


def _prefix(rng, always: bool) -> str:
    return "<image>\n" if always or rng.random() < 0.12 else ""


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _shuffled(rng, objs):
    return [objs[i] for i in rng.permutation(len(objs))]


# ---------------------------------------------------------------------------------------------- families
def left_right(view: View, rng) -> QA | None:
    cls = _pick(rng, [PALLET] * 13 + [BUFFER] * 5 + [TRANSPORTER])
    objs = view.of(cls)
    if len(objs) < 2:
        return None
    for _ in range(8):
        i, j = rng.choice(len(objs), 2, replace=False)
        a, b = objs[int(i)], objs[int(j)]
        if view.clearly_ordered(a, b):
            break
    else:
        return None
    relation = "left" if view.u[a.instance_id] < view.u[b.instance_id] else "right"
    noun = T.name(cls, rng)
    q = T.left_right_question(rng, noun, noun)
    return QA("left_right", "lr_pair", _prefix(rng, False) + q, T.left_right_answer(rng, noun, noun, relation),
              relation, [a.instance_id, b.instance_id])


def count_in_buffer(view: View, rng) -> QA | None:
    buffers = view.of(BUFFER)
    if len(buffers) < 2:
        return None
    select = _pick(rng, ["leftmost"] * 3 + ["rightmost"] * 3 + ["middle"] + ["closest_to_shelf"] * 2 + ["closest_to_side_shelf"])
    shelves: list[SceneObject] = []
    side, anchor = None, None
    if select in ("leftmost", "rightmost", "middle"):
        chosen = view.extreme(buffers, select)
    else:
        visible_shelves = view.of(SHELF)
        if select == "closest_to_shelf" and visible_shelves:
            shelves = [_pick(rng, visible_shelves)]
            anchor = shelves[0]
        elif select == "closest_to_side_shelf" and len(visible_shelves) >= 2:
            shelves = _shuffled(rng, visible_shelves)[:2]
            side = _pick(rng, ["left", "right"])
            anchor = view.extreme(shelves, side + "most")
            if anchor is None:
                return None
        else:
            return None
        chosen = clear_closest(buffers, anchor)
    if chosen is None:
        return None
    inside = [p for p in view.scene.by_class(PALLET) if inside_buffer(p, chosen)]
    visible_pallets = view.of(PALLET)
    if any(p not in visible_pallets for p in inside):
        return None  # a hidden pallet would make the listed masks disagree with the 3-D count
    in_any = [p for p in visible_pallets if any(inside_buffer(p, b) for b in buffers)]
    loose = _shuffled(rng, [p for p in visible_pallets if p not in in_any])
    room = MAX_MASKS - len(buffers) - len(shelves) - len(in_any)
    if room < 0:
        return None
    pallets = in_any + loose[: int(rng.integers(0, min(room, len(loose), 3) + 1))]
    if not pallets:
        return None
    if len(buffers) + len(pallets) + len(shelves) < 4:  # the real count questions list 4 to 15 regions
        return None
    buffers, pallets = _shuffled(rng, buffers), _shuffled(rng, pallets)
    regions = buffers + pallets + shelves
    idx = {o.instance_id: k for k, o in enumerate(regions)}
    n = len(inside)
    q = T.count_question(rng, len(buffers), len(pallets), select, side)
    a = T.count_answer(rng, select, idx[chosen.instance_id], sorted(idx[p.instance_id] for p in inside),
                       idx[anchor.instance_id] if anchor is not None else None, side)
    return QA("count", "count_buffer", "<image>\n" + q, a, n, [o.instance_id for o in regions],
              {"select": select, "side": side, "n_buffers": len(buffers), "n_pallets": len(pallets),
               "n_shelves": len(shelves)})


def distance_pair(view: View, rng) -> QA | None:
    kind = _pick(rng, [(PALLET, PALLET)] * 17 + [(TRANSPORTER, PALLET), (PALLET, TRANSPORTER), (SHELF, PALLET)])
    a_objs, b_objs = view.of(kind[0]), view.of(kind[1])
    if not a_objs or not b_objs:
        return None
    a = _pick(rng, a_objs)
    b = _pick(rng, [o for o in b_objs if o is not a] or [None])
    if b is None:
        return None
    d = object_distance(a, b)
    if d is None:
        return None
    na, nb = T.name(kind[0], rng), T.name(kind[1], rng)
    return QA("distance", "dist_pair", _prefix(rng, False) + T.distance_question(rng, na, nb),
              T.distance_answer(rng, na, nb, d, 0, 1), d, [a.instance_id, b.instance_id])


def distance_to_buffer(view: View, rng) -> QA | None:
    buffers = view.of(BUFFER)
    pallets = view.of(PALLET)
    if not buffers or not pallets:
        return None
    want_inside = rng.random() < 0.4  # about 7.6% of real val distances are 0
    pairs = [(p, b) for p in pallets for b in buffers if inside_buffer(p, b) == want_inside]
    if not pairs:
        return None
    p, b = pairs[int(rng.integers(len(pairs)))]
    d = object_distance(p, b)
    if d is None:
        return None
    nb = T.name(BUFFER, rng)
    return QA("distance", "dist_to_buffer", _prefix(rng, False) + T.distance_question(rng, "pallet", nb),
              T.distance_answer(rng, "pallet", nb, d, 0, 1), d, [p.instance_id, b.instance_id])


def distance_extreme_pallet_buffer(view: View, rng) -> QA | None:
    buffers, pallets = view.of(BUFFER), view.of(PALLET)
    if len(buffers) < 2 or len(pallets) < 4:
        return None
    pallets = _shuffled(rng, pallets)[: int(rng.integers(4, min(len(pallets), MAX_MASKS - len(buffers), 10) + 1))]
    p_side = _pick(rng, ["leftmost", "rightmost"])
    b_side = p_side if rng.random() < 0.2 else ("rightmost" if p_side == "leftmost" else "leftmost")
    p, b = view.extreme(pallets, p_side), view.extreme(buffers, b_side)
    d = object_distance(p, b) if p is not None and b is not None else None
    if d is None:
        return None
    buffers = _shuffled(rng, buffers)
    regions = buffers + pallets
    idx = {o.instance_id: k for k, o in enumerate(regions)}
    q = T.extreme_pallet_buffer_question(rng, len(buffers), len(pallets), p_side, b_side)
    a = T.extreme_pallet_buffer_answer(rng, idx[p.instance_id], idx[b.instance_id], p_side, b_side, d)
    return QA("distance", "dist_extreme_pallet_buffer", "<image>\n" + q, a, d, [o.instance_id for o in regions],
              {"pallet": p_side, "buffer": b_side, "n_buffers": len(buffers), "n_pallets": len(pallets)})


def distance_extreme_pallets(view: View, rng) -> QA | None:
    pallets = view.of(PALLET)
    if len(pallets) < 5:
        return None
    pallets = _shuffled(rng, pallets)[: int(rng.integers(5, min(len(pallets), 10) + 1))]
    left, right = view.extreme(pallets, "leftmost"), view.extreme(pallets, "rightmost")
    d = object_distance(left, right) if left is not None and right is not None else None
    if d is None:
        return None
    idx = {o.instance_id: k for k, o in enumerate(pallets)}
    return QA("distance", "dist_extreme_pallets", "<image>\n" + T.extreme_pallets_question(rng, len(pallets)),
              T.extreme_pallets_answer(rng, idx[left.instance_id], idx[right.instance_id], d), d,
              [o.instance_id for o in pallets], {"n_pallets": len(pallets)})


def distance_transporter_buffer(view: View, rng) -> QA | None:
    transporters, buffers = view.of(TRANSPORTER), view.of(BUFFER)
    if not transporters or len(buffers) < 2:
        return None
    side = _pick(rng, ["leftmost", "rightmost"])
    b = view.extreme(buffers, side)
    if b is None:
        return None
    t = _pick(rng, transporters)
    d = object_distance(t, b)
    if d is None:
        return None
    buffers = _shuffled(rng, buffers)
    return QA("distance", "dist_transporter_buffer", "<image>\n" + T.transporter_buffer_question(rng, len(buffers), side),
              T.transporter_buffer_answer(rng, 1 + buffers.index(b), side, d), d,
              [t.instance_id] + [o.instance_id for o in buffers], {"buffer": side, "n_buffers": len(buffers)})


def mcq_extreme(view: View, rng) -> QA | None:
    cls = _pick(rng, [PALLET] * 15 + [BUFFER] * 4 + [TRANSPORTER])
    objs = view.of(cls)
    n = int(_pick(rng, [2] + [3] * 14 + [4, 4] + [5]))
    if len(objs) < n:
        return None
    objs = _shuffled(rng, objs)[:n]
    select = _pick(rng, ["leftmost"] * 5 + ["rightmost"] * 5 + ["middle"])
    chosen = view.extreme(objs, select)
    if chosen is None:
        return None
    k = objs.index(chosen)
    names = [T.name(cls, rng)] * n
    return QA("mcq", "mcq_extreme", _prefix(rng, n > 3) + T.mcq_extreme_question(rng, names, select),
              T.mcq_extreme_answer(rng, names, select, k), str(k), [o.instance_id for o in objs], {"select": select})


def mcq_buffer_shelf(view: View, rng) -> QA | None:
    buffers, shelves = view.of(BUFFER), view.of(SHELF)
    if len(buffers) < 2 or not shelves:
        return None
    shelf = _pick(rng, shelves)
    chosen = clear_closest(buffers, shelf)
    if chosen is None:
        return None
    buffers = _shuffled(rng, buffers)
    k = buffers.index(chosen)
    return QA("mcq", "mcq_buffer_shelf", "<image>\n" + T.buffer_shelf_question(rng, len(buffers)),
              T.buffer_shelf_answer(rng, k, len(buffers)), str(k), [o.instance_id for o in buffers + [shelf]])


def mcq_pickup(view: View, rng) -> QA | None:
    transporters, pallets = view.of(TRANSPORTER), view.of(PALLET)
    empty = [t for t in transporters if not t.carrying]
    if not empty or len(pallets) < 3:
        return None
    target = _pick(rng, empty)
    carrying = _shuffled(rng, [t for t in transporters if t.carrying])
    pallets = _shuffled(rng, pallets)[: int(rng.integers(3, min(len(pallets), 9) + 1))]
    best = clear_closest(pallets, target)
    if best is None:
        return None
    layout = "transporters_first" if carrying and rng.random() < 0.6 else _pick(rng, ["pallets_first", "pallets_only"])
    if layout == "transporters_first":
        listed = _shuffled(rng, [target] + carrying[: int(rng.integers(1, min(len(carrying), 3) + 1))])
        regions = listed + pallets
        q = T.pickup_question_transporters_first(rng, len(listed), len(pallets))
    else:
        regions = pallets + [target]
        q = T.pickup_question_pallets_first(rng, len(pallets), bare=layout == "pallets_only")
    idx = {o.instance_id: k for k, o in enumerate(regions)}
    a = T.pickup_answer(rng, idx[best.instance_id], idx[target.instance_id], announce_empty=layout == "transporters_first")
    return QA("mcq", "mcq_pickup", "<image>\n" + q, a, str(idx[best.instance_id]), [o.instance_id for o in regions],
              {"layout": layout, "n_transporters": len(regions) - len(pallets), "n_pallets": len(pallets)})


FAMILIES = {
    "left_right": [(left_right, 1.0)],
    "count": [(count_in_buffer, 1.0)],
    "distance": [(distance_pair, 0.48), (distance_to_buffer, 0.12), (distance_extreme_pallet_buffer, 0.19),
                 (distance_extreme_pallets, 0.15), (distance_transporter_buffer, 0.06)],
    "mcq": [(mcq_extreme, 0.75), (mcq_buffer_shelf, 0.08), (mcq_pickup, 0.17)],
}


def make_questions(scene: Scene, rendering: Rendering, rng: np.random.Generator, count: int) -> list[QA]:
    """Up to `count` distinct questions about one frame; categories drawn with the real train shares."""
    view = View(scene, rendering)
    cats = list(CATEGORY_SHARE)
    share = np.array([DRAW_WEIGHTS[c] for c in cats])
    out: list[QA] = []
    seen: set = set()
    for _ in range(count * 4):
        if len(out) == count:
            break
        cat = cats[int(rng.choice(len(cats), p=share / share.sum()))]
        funcs, weights = zip(*FAMILIES[cat])
        w = np.array(weights) / sum(weights)
        for _try in range(6):  # retry inside the category first, so the mix stays near the target
            qa = funcs[int(rng.choice(len(funcs), p=w))](view, rng)
            if qa is None:
                continue
            key = (qa.family, tuple(qa.regions), tuple(sorted((k, str(v)) for k, v in qa.params.items())))
            if key not in seen:
                seen.add(key)
                out.append(qa)
                break
    return out

