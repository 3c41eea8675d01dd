"""A procedural warehouse in 3-D: painted buffer strips, pallets, shelves, transporters, clutter, a camera.

World frame: metres, z up, floor at z = 0. Every object is a set of boxes ("parts") that share the object's
yaw; its 3-D box (centre, size, yaw) is the bound of those parts, loads included, so "the centre of a
pallet" means the centre of pallet + boxes, as a mask of it shows. Buffers are flat floor rectangles
(height 0). Camera: pinhole, OpenCV axes (x right, y down, z forward), elevated like a surveillance camera.

Positions are rounded to 0.1 mm and angles to 1e-6 rad once, before rendering, so the numbers written to
the metadata are exactly the numbers every answer was computed from.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

PALLET, BUFFER, TRANSPORTER, SHELF = "pallet", "buffer", "transporter", "shelf"

# Surface patterns the renderer knows (see render.py).
TEX_PLAIN, TEX_WOOD, TEX_CARDBOARD, TEX_WRAP, TEX_METAL, TEX_HAZARD = range(6)

MAX_FLOOR_RANGE_M = 21.0  # loose objects are placed no farther than this from the camera (horizontally)


@dataclass(frozen=True)
class Part:
    offset: tuple[float, float, float]  # box centre in the object's frame
    half: tuple[float, float, float]    # half sizes along the object's x, y, z
    color: tuple[float, float, float]   # linear RGB albedo in [0, 1]
    texture: int = TEX_PLAIN


@dataclass
class SceneObject:
    cls: str
    x: float
    y: float
    yaw: float
    parts: list[Part] = field(default_factory=list)
    instance_id: int = 0
    loaded: bool | None = None       # pallets: boxes on top
    carrying: bool | None = None     # transporters: a load on top
    buffer_id: int | None = None     # pallets: instance id of the buffer strip holding it
    half_extent: tuple[float, float] = (0.0, 0.0)  # buffers: half length/width of the painted rectangle
    paint: dict | None = None        # buffers: line colour, width, fill
    _bounds: tuple | None = field(default=None, repr=False, compare=False)

    def local_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.parts:  # a flat painted rectangle
            h = np.array([self.half_extent[0], self.half_extent[1], 0.0])
            return -h, h
        if self._bounds is None or self._bounds[0] is not self.parts:  # parts never change once placed
            offsets = np.array([p.offset for p in self.parts])
            halves = np.array([p.half for p in self.parts])
            self._bounds = (self.parts, (offsets - halves).min(0), (offsets + halves).max(0))
        return self._bounds[1], self._bounds[2]

    @property
    def center(self) -> np.ndarray:
        lo, hi = self.local_bounds()
        c = (lo + hi) / 2
        cos, sin = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([self.x + cos * c[0] - sin * c[1], self.y + sin * c[0] + cos * c[1], c[2]])

    @property
    def size(self) -> np.ndarray:
        lo, hi = self.local_bounds()
        return hi - lo

    def footprint(self) -> tuple[float, float, float, float, float]:
        """(cx, cy, half_x, half_y, yaw) of the floor rectangle the object covers."""
        c, s = self.center, self.size
        return (c[0], c[1], s[0] / 2, s[1] / 2, self.yaw)


@dataclass
class Camera:
    width: int
    height: int
    hfov_deg: float
    position: np.ndarray  # (3,) world
    heading: float        # direction of the optical axis in the floor plane (rad)
    pitch: float          # downward tilt (rad, > 0 looks down)
    roll: float = 0.0

    @property
    def fx(self) -> float:
        return self.width / (2.0 * math.tan(math.radians(self.hfov_deg) / 2.0))

    @property
    def fy(self) -> float:
        return self.fx  # square pixels

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    @property
    def rotation(self) -> np.ndarray:
        """World-to-camera rotation; rows are the camera's right, down and forward axes in world."""
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        forward = np.array([cp * math.cos(self.heading), cp * math.sin(self.heading), -sp])
        right = np.array([math.sin(self.heading), -math.cos(self.heading), 0.0])
        down = np.cross(forward, right)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        right, down = cr * right + sr * down, -sr * right + cr * down
        return np.stack([right, down, forward])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and camera depth z (N,) of world points (N, 3)."""
        p = self.to_camera(np.atleast_2d(points))
        z = p[:, 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        uv = np.stack([self.fx * p[:, 0] / safe + self.cx, self.fy * p[:, 1] / safe + self.cy], 1)
        return uv, z

    def floor_point(self, u_norm: float, v_norm: float) -> np.ndarray | None:
        """Where the ray through a normalised image position (0..1, 0..1) meets the floor."""
        x = (u_norm * self.width - self.cx) / self.fx
        y = (v_norm * self.height - self.cy) / self.fy
        d = self.rotation.T @ np.array([x, y, 1.0])
        if d[2] >= -1e-6:
            return None
        t = -self.position[2] / d[2]
        return self.position + t * d


@dataclass
class Scene:
    camera: Camera
    room_half: tuple[float, float]
    room_height: float
    objects: list[SceneObject]
    light: dict
    floor: dict
    walls: dict
    lines: list[dict]   # painted walkway lines: cx, cy, half_x, half_y, yaw, color
    look: dict          # exposure, noise, vignette: how the "sensor" renders
    render_seed: int

    def by_class(self, cls: str) -> list[SceneObject]:
        return [o for o in self.objects if o.cls == cls]

    def by_id(self, instance_id: int) -> SceneObject:
        return self.objects[instance_id - 1]


# ----------------------------------------------------------------------------------------------- colours
def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (r, g, b)


def _jitter(rng, color, amount=0.06) -> tuple[float, float, float]:
    c = np.clip(np.asarray(color) * (1 + rng.uniform(-amount, amount, 3)), 0, 1)
    return tuple(float(x) for x in c)


def _wood(rng) -> tuple[float, float, float]:
    if rng.random() < 0.25:  # plastic pallets come in any colour, so colour alone never says "pallet"
        return _hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.8))
    return _hsv(rng.uniform(0.06, 0.11), rng.uniform(0.3, 0.6), rng.uniform(0.45, 0.85))


def _goods(rng) -> tuple[tuple[float, float, float], int]:
    r = rng.random()
    if r < 0.55:
        return _hsv(rng.uniform(0.07, 0.11), rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.85)), TEX_CARDBOARD
    if r < 0.8:
        return _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.6, 0.95)), TEX_WRAP
    return _hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.9)), TEX_PLAIN


def _any_color(rng) -> tuple[float, float, float]:
    return _hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.25, 0.95))


# ------------------------------------------------------------------------------------------- object kits
def _carton_grid(rng, length, width, z0, max_height) -> list[Part]:
    """Cartons in a grid of 1-3 layers on a footprint; one colour family per stack like real goods."""
    color, tex = _goods(rng)
    nx, ny = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    layers = int(rng.integers(1, 4))
    cell_x, cell_y = length / nx, width / ny
    h = min(rng.uniform(0.22, 0.45), max_height / layers)
    parts = []
    for k in range(layers):
        for i in range(nx):
            for j in range(ny):
                if k == layers - 1 and layers > 1 and rng.random() < 0.25:
                    continue  # an incomplete top layer
                parts.append(Part(
                    (-length / 2 + (i + 0.5) * cell_x, -width / 2 + (j + 0.5) * cell_y, z0 + (k + 0.5) * h),
                    (cell_x / 2 - 0.01, cell_y / 2 - 0.01, h / 2 - 0.004), _jitter(rng, color), tex))
    return parts


def _load(rng, length, width, z0) -> list[Part]:
    if rng.random() < 0.4:  # one wrapped block
        color, tex = _goods(rng)
        h = rng.uniform(0.3, 1.3)
        lx, ly = length * rng.uniform(0.85, 1.0), width * rng.uniform(0.85, 1.0)
        return [Part((0.0, 0.0, z0 + h / 2), (lx / 2, ly / 2, h / 2), color, tex)]
    return _carton_grid(rng, length * rng.uniform(0.9, 1.0), width * rng.uniform(0.9, 1.0), z0, 1.3)


def pallet_parts(rng, loaded: bool) -> list[Part]:
    length, width, height = rng.uniform(1.15, 1.25), rng.uniform(0.95, 1.05), rng.uniform(0.13, 0.16)
    wood = _wood(rng)
    dark = tuple(c * 0.75 for c in wood)
    deck = 0.025
    parts = [Part((0.0, 0.0, height - deck / 2), (length / 2, width / 2, deck / 2), wood, TEX_WOOD)]
    for y in (-width / 2 + 0.05, 0.0, width / 2 - 0.05):  # three stringers leave two visible fork pockets
        parts.append(Part((0.0, y, (height - deck) / 2), (length / 2, 0.05, (height - deck) / 2), dark, TEX_WOOD))
    if loaded:
        parts += _load(rng, length, width, height)
    return parts


def transporter_parts(rng, carrying: bool) -> list[Part]:
    length, width, height = rng.uniform(1.2, 1.4), rng.uniform(0.72, 0.88), rng.uniform(0.25, 0.35)
    body = _any_color(rng)
    metal = _hsv(0.6, 0.05, rng.uniform(0.2, 0.5))
    parts = [
        Part((0.0, 0.0, 0.02), (length / 2 - 0.05, width / 2 - 0.05, 0.02), (0.05, 0.05, 0.05)),
        Part((0.0, 0.0, (0.04 + height - 0.03) / 2), (length / 2, width / 2, (height - 0.07) / 2), body, TEX_METAL),
        Part((0.0, 0.0, height - 0.015), (length / 2 - 0.08, width / 2 - 0.08, 0.015), metal, TEX_METAL),
        Part((length / 2 - 0.06, 0.0, height + 0.03), (0.05, 0.09, 0.03), (0.08, 0.08, 0.1)),
    ]
    if carrying:
        parts += _load(rng, length * 0.85, width * 0.95, height)
    return parts


def shelf_parts(rng) -> list[Part]:
    length, depth, height = rng.uniform(3.5, 9.0), rng.uniform(0.9, 1.3), rng.uniform(2.0, 4.5)
    levels = int(rng.integers(2, 6))
    bays = max(1, int(math.ceil(length / rng.uniform(2.2, 3.0))))
    upright, beam = _any_color(rng), _any_color(rng)
    deck_color = _hsv(0.1, rng.uniform(0, 0.4), rng.uniform(0.4, 0.8))
    parts = []
    for i in range(bays + 1):
        x = -length / 2 + 0.04 + i * (length - 0.08) / bays
        for y in (-depth / 2 + 0.04, depth / 2 - 0.04):
            parts.append(Part((x, y, height / 2), (0.04, 0.04, height / 2), upright, TEX_METAL))
    gap = (height - 0.1) / levels
    for k in range(levels):
        z = 0.1 + k * gap
        parts.append(Part((0.0, 0.0, z), (length / 2, depth / 2, 0.025), deck_color, TEX_METAL))
        for y in (-depth / 2 + 0.03, depth / 2 - 0.03):
            parts.append(Part((0.0, y, z + 0.03), (length / 2, 0.03, 0.05), beam, TEX_METAL))
        if k == levels - 1 and gap < 0.5:
            continue
        bay_len = (length - 0.08) / bays
        for i in range(bays):
            if rng.random() < 0.3:
                continue
            h = min(rng.uniform(0.3, 0.9), gap - 0.15)
            w = bay_len * rng.uniform(0.4, 0.9)
            xc = -length / 2 + 0.04 + (i + 0.5) * bay_len + rng.uniform(-0.1, 0.1) * bay_len
            color, tex = _goods(rng)
            parts.append(Part((xc, 0.0, z + 0.025 + h / 2), (w / 2, depth / 2 - 0.08, h / 2), color, tex))
    return parts


def distractor_parts(rng, kind: str, room_height: float) -> list[Part]:
    if kind == "carton_stack":
        return _carton_grid(rng, rng.uniform(0.6, 1.6), rng.uniform(0.5, 1.2), 0.0, 1.4)
    if kind == "cone":
        c = _hsv(rng.uniform(0.0, 0.1), 0.9, 0.9)
        return [Part((0, 0, 0.02), (0.18, 0.18, 0.02), (0.05, 0.05, 0.05)),
                Part((0, 0, 0.17), (0.11, 0.11, 0.13), c),
                Part((0, 0, 0.4), (0.065, 0.065, 0.1), (0.9, 0.9, 0.9)),
                Part((0, 0, 0.56), (0.04, 0.04, 0.06), c)]
    if kind == "bin":
        color = _any_color(rng)
        return [Part((0, 0, 0.2), (0.3, 0.2, 0.2), color), Part((0, 0, 0.41), (0.31, 0.21, 0.01), _jitter(rng, color, 0.2))]
    if kind == "pillar":
        side = rng.uniform(0.22, 0.32)
        concrete = _hsv(0.1, 0.05, rng.uniform(0.5, 0.8))
        return [Part((0, 0, room_height / 2), (side, side, room_height / 2), concrete),
                Part((0, 0, 0.6), (side + 0.01, side + 0.01, 0.6), (0.85, 0.7, 0.05), TEX_HAZARD)]
    if kind == "barrier":
        length, color = rng.uniform(1.2, 2.4), _hsv(rng.uniform(0.1, 0.16), 0.9, 0.9)
        return [Part((-length / 2 + 0.04, 0, 0.5), (0.04, 0.04, 0.5), color),
                Part((length / 2 - 0.04, 0, 0.5), (0.04, 0.04, 0.5), color),
                Part((0, 0, 0.95), (length / 2, 0.03, 0.05), color, TEX_HAZARD),
                Part((0, 0, 0.5), (length / 2, 0.02, 0.03), color)]
    raise ValueError(f"unknown distractor kind {kind!r}")


DISTRACTOR_KINDS = ("carton_stack", "carton_stack", "cone", "bin", "barrier", "pillar")


# ------------------------------------------------------------------------------------------ 2-D geometry
def rect_corners(cx, cy, hx, hy, yaw) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    return local @ np.array([[c, s], [-s, c]]) + [cx, cy]


def rects_overlap(a, b, pad: float = 0.0) -> bool:
    """Separating-axis test of two yawed rectangles (cx, cy, hx, hy, yaw), each grown by `pad`."""
    reach = math.hypot(a[2] + pad, a[3] + pad) + math.hypot(b[2] + pad, b[3] + pad)
    if (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 > reach * reach:  # bounding circles apart: the common case
        return False
    ca = rect_corners(a[0], a[1], a[2] + pad, a[3] + pad, a[4])
    cb = rect_corners(b[0], b[1], b[2] + pad, b[3] + pad, b[4])
    for yaw in (a[4], b[4]):
        for axis in (np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])):
            pa, pb = ca @ axis, cb @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def point_in_rect(px, py, rect, margin: float = 0.0) -> bool:
    cx, cy, hx, hy, yaw = rect
    c, s = math.cos(yaw), math.sin(yaw)
    lx, ly = c * (px - cx) + s * (py - cy), -s * (px - cx) + c * (py - cy)
    return abs(lx) <= hx - margin and abs(ly) <= hy - margin


def segment_hits_box(p0: np.ndarray, p1: np.ndarray, obj: SceneObject) -> bool:
    """Does the segment p0 -> p1 pass through the object's 3-D box (slab test)?"""
    lo, hi = obj.local_bounds()
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    o = rot @ (p0 - np.array([obj.x, obj.y, 0.0]))
    d = rot @ (p1 - p0)
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (lo - o) / d, (hi - o) / d
    t_near, t_far = np.minimum(t1, t2).max(), np.maximum(t1, t2).min()
    return bool(t_near <= t_far and t_far > 0 and t_near < 1)


# ---------------------------------------------------------------------------------------------- layout
PAINT_COLORS = ((0.92, 0.74, 0.08), (0.92, 0.92, 0.88), (0.95, 0.45, 0.08), (0.8, 0.12, 0.1),
                (0.1, 0.3, 0.8), (0.1, 0.6, 0.25))
# 0..4 pallets per strip. Real val counts are 1-4 evenly; full strips hide pallets more often (and are then
# not asked about), so 4 is drawn a little more often to keep the asked counts even.
BUFFER_OCCUPANCY_P = (0.04, 0.21, 0.22, 0.24, 0.29)


def _layout_to_world(layout_yaw: float, lx: float, ly: float) -> tuple[float, float]:
    c, s = math.cos(layout_yaw), math.sin(layout_yaw)
    return c * lx - s * ly, s * lx + c * ly


def _buffers(rng, layout_yaw: float) -> list[SceneObject]:
    """Parallel painted strips side by side, as in the real frames."""
    count = int(rng.choice([2, 3, 4], p=[0.1, 0.8, 0.1]))
    width, length = rng.uniform(1.5, 2.2), rng.uniform(4.8, 7.0)
    gaps = rng.uniform(0.8, 2.8, count - 1)
    xs = np.concatenate([[0.0], np.cumsum(width + gaps)])
    xs -= xs.mean()
    shared_color = PAINT_COLORS[int(rng.integers(len(PAINT_COLORS)))]
    out = []
    for lx in xs:
        color = shared_color if rng.random() < 0.8 else PAINT_COLORS[int(rng.integers(len(PAINT_COLORS)))]
        x, y = _layout_to_world(layout_yaw, float(lx), rng.uniform(-0.8, 0.8))
        fill = 0.0 if rng.random() < 0.5 else rng.uniform(0.1, 0.35)
        out.append(SceneObject(BUFFER, x, y, layout_yaw,
                               half_extent=(width * rng.uniform(0.97, 1.03) / 2, length * rng.uniform(0.97, 1.03) / 2),
                               paint={"color": list(color), "line_half_width": rng.uniform(0.04, 0.09), "fill": fill}))
    return out


def _fill_buffer(rng, buf: SceneObject, count: int) -> list[SceneObject]:
    """Up to four pallets in slots along the strip, rotated a little, fully inside the painted rectangle."""
    hx, hy = buf.half_extent
    margin = buf.paint["line_half_width"]
    slot = 2 * hy / 4
    rect = (buf.x, buf.y, hx, hy, buf.yaw)
    pallets: list[SceneObject] = []
    for i in sorted(rng.choice(4, size=count, replace=False)):
        loaded = bool(rng.random() < 0.65)
        pallet = SceneObject(PALLET, 0, 0, 0, pallet_parts(rng, loaded), loaded=loaded)
        for attempt in range(16):
            spread = 1.0 - attempt / 15  # shrink the jitter until it fits; the last try is the tidy slot
            lx = rng.uniform(-0.15, 0.15) * (2 * hx - 1.2) * spread
            ly = -hy + (i + 0.5) * slot + rng.uniform(-0.12, 0.12) * slot * spread
            yaw = buf.yaw + rng.uniform(-0.45, 0.45) * spread
            pallet.x, pallet.y = _layout_to_world(buf.yaw, lx, ly)
            pallet.x += buf.x
            pallet.y += buf.y
            pallet.yaw = yaw
            fp = pallet.footprint()
            corners = rect_corners(*fp)
            inside = all(point_in_rect(px, py, rect, margin) for px, py in corners)
            if inside and not any(rects_overlap(fp, p.footprint(), 0.02) for p in pallets):
                pallets.append(pallet)
                break
    return pallets


def _shelves(rng, layout_yaw: float, buffers: list[SceneObject]) -> list[SceneObject]:
    row_half = max(abs(_to_layout(layout_yaw, b.x, b.y)[0]) + b.half_extent[0] for b in buffers)
    strip_half = max(abs(_to_layout(layout_yaw, b.x, b.y)[1]) + b.half_extent[1] for b in buffers)
    taken = [(b.x, b.y, b.half_extent[0], b.half_extent[1], b.yaw) for b in buffers]
    shelves: list[SceneObject] = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))):
        for _attempt in range(20):
            shelf = SceneObject(SHELF, 0, 0, 0, shelf_parts(rng))
            depth_half = shelf.size[1] / 2
            gap = rng.uniform(1.0, 4.0)
            side = rng.choice([-1.0, 1.0])
            if rng.random() < 0.5:  # beside the row, long side parallel to the strips
                lx, ly, yaw = side * (row_half + gap + depth_half), rng.uniform(-2.5, 2.5), layout_yaw + math.pi / 2
            else:  # across the ends of the strips
                lx, ly, yaw = rng.uniform(-5.0, 5.0), side * (strip_half + gap + depth_half), layout_yaw
            shelf.x, shelf.y = _layout_to_world(layout_yaw, lx, ly)
            shelf.yaw = yaw
            fp = shelf.footprint()
            if not any(rects_overlap(fp, t, 0.6) for t in taken):
                taken.append(fp)
                shelves.append(shelf)
                break
    return shelves


def _to_layout(layout_yaw: float, x: float, y: float) -> tuple[float, float]:
    c, s = math.cos(layout_yaw), math.sin(layout_yaw)
    return c * x + s * y, -s * x + c * y


def _camera(rng, width, height, room_half, room_height, buffers, shelves) -> Camera:
    """An elevated camera looking at the buffer row, not standing in or behind a shelf."""
    best = None
    for _ in range(40):
        target = rng.normal(0.0, 1.5, 2)
        heading = rng.uniform(-math.pi, math.pi)
        cam_h, dist = rng.uniform(4.5, 9.5), rng.uniform(5.0, 12.0)
        pos = np.array([target[0] - dist * math.cos(heading), target[1] - dist * math.sin(heading), cam_h])
        cam = Camera(width, height, rng.uniform(55.0, 80.0), pos, heading + rng.uniform(-0.1, 0.1),
                     math.atan2(cam_h, dist) + rng.uniform(-0.07, 0.07), rng.normal(0.0, 0.01))
        if abs(pos[0]) > room_half[0] - 1 or abs(pos[1]) > room_half[1] - 1 or cam_h > room_height - 0.5:
            continue
        if any(rects_overlap((pos[0], pos[1], 0.3, 0.3, 0.0), s.footprint(), 1.0) for s in shelves):
            continue
        centres = np.array([[b.x, b.y, 0.0] for b in buffers])
        uv, z = cam.project(centres)
        in_view = int(((z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < width) & (uv[:, 1] > 0) & (uv[:, 1] < height)).sum())
        blocked = sum(segment_hits_box(pos, c, s) for c in centres for s in shelves)
        score = in_view - blocked
        if best is None or score > best[0]:
            best = (score, cam)
        if in_view == len(buffers) and not blocked:
            break
    return best[1]


def _place_in_view(rng, camera: Camera, obj: SceneObject, footprints: list, buffer_rects: list,
                   room_half, min_camera_gap: float = 2.5, tries: int = 40) -> bool:
    """Drop `obj` on a free floor spot the camera sees; False if none was found."""
    for _ in range(tries):
        p = camera.floor_point(rng.uniform(0.02, 0.98), rng.uniform(0.08, 0.98))
        if p is None:
            continue
        horizontal = math.hypot(p[0] - camera.position[0], p[1] - camera.position[1])
        if horizontal > MAX_FLOOR_RANGE_M or horizontal < min_camera_gap:
            continue
        if abs(p[0]) > room_half[0] - 1.5 or abs(p[1]) > room_half[1] - 1.5:
            continue
        obj.x, obj.y, obj.yaw = float(p[0]), float(p[1]), rng.uniform(-math.pi, math.pi)
        fp = obj.footprint()
        if any(rects_overlap(fp, f, 0.25) for f in footprints) or any(rects_overlap(fp, b, 0.3) for b in buffer_rects):
            continue
        footprints.append(fp)
        return True
    return False


def _appearance(rng, layout_yaw: float, buffers: list[SceneObject]):
    """Light, floor, walls, walkway lines and sensor look: varied per frame so colour is never the cue."""
    elevation, azimuth = rng.uniform(0.7, 1.48), rng.uniform(-math.pi, math.pi)
    light = {"direction": [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)],
             "color": list(_jitter(rng, (1.0, 0.97, 0.92), 0.08)), "intensity": rng.uniform(0.65, 1.0),
             "ambient": rng.uniform(0.3, 0.55)}
    if rng.random() < 0.75:
        floor_color = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.7))
    else:  # painted epoxy floors
        floor_color = _hsv(rng.uniform(0.25, 0.62), rng.uniform(0.15, 0.4), rng.uniform(0.3, 0.6))
    floor = {"color": list(floor_color), "noise": rng.uniform(0.05, 0.2), "texel_m": rng.uniform(0.15, 0.6),
             "tile_m": float(rng.choice([0.0, rng.uniform(2.0, 6.0)])), "tile_dark": rng.uniform(0.75, 0.92)}
    walls = {"color": list(_hsv(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.2), rng.uniform(0.55, 0.9))),
             "panel_m": rng.uniform(1.0, 3.0), "ceiling": list(_hsv(0.6, 0.05, rng.uniform(0.15, 0.35)))}
    lines = []
    for _ in range(int(rng.integers(0, 4))):  # walkway lines, kept clear of the buffer strips
        strip_end = max(abs(_to_layout(layout_yaw, b.x, b.y)[1]) + b.half_extent[1] for b in buffers)
        x, y = _layout_to_world(layout_yaw, rng.uniform(-3, 3), rng.choice([-1, 1]) * (strip_end + rng.uniform(0.8, 4.0)))
        lines.append({"cx": x, "cy": y, "half_x": rng.uniform(5.0, 20.0), "half_y": rng.uniform(0.05, 0.08),
                      "yaw": layout_yaw, "color": list(PAINT_COLORS[int(rng.integers(2))])})
    look = {"exposure": rng.uniform(0.85, 1.2), "noise": rng.uniform(0.003, 0.015), "vignette": rng.uniform(0.0, 0.35),
            "gains": list(rng.uniform(0.92, 1.08, 3))}
    return light, floor, walls, lines, look


def generate_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """One warehouse frame's worth of 3-D content. Only `rng` decides what is in it; `width`/`height`
    only scale the camera intrinsics, so the same rng gives the same scene at every resolution of one aspect."""
    room_half = (rng.uniform(18.0, 30.0), rng.uniform(15.0, 24.0))
    room_height = rng.uniform(7.0, 11.0)
    layout_yaw = rng.uniform(-math.pi, math.pi)
    buffers = _buffers(rng, layout_yaw)
    shelves = _shelves(rng, layout_yaw, buffers)
    camera = _camera(rng, width, height, room_half, room_height, buffers, shelves)

    pallets: list[SceneObject] = []
    for buf in buffers:
        pallets += _fill_buffer(rng, buf, int(rng.choice(5, p=BUFFER_OCCUPANCY_P)))
    buffer_rects = [(b.x, b.y, b.half_extent[0], b.half_extent[1], b.yaw) for b in buffers]
    footprints = [s.footprint() for s in shelves]

    loose: list[SceneObject] = []
    for _ in range(int(rng.integers(2, 8))):
        loaded = bool(rng.random() < 0.5)
        obj = SceneObject(PALLET, 0, 0, 0, pallet_parts(rng, loaded), loaded=loaded)
        if _place_in_view(rng, camera, obj, footprints, buffer_rects, room_half):
            loose.append(obj)
    transporters: list[SceneObject] = []
    n_transporters = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.3, 0.2]))
    carrying = [bool(rng.random() < 0.5) for _ in range(n_transporters)]
    if all(carrying):  # the pick-up question needs an empty transporter
        carrying[int(rng.integers(n_transporters))] = False
    for carry in carrying:
        obj = SceneObject(TRANSPORTER, 0, 0, 0, transporter_parts(rng, carry), carrying=carry)
        if _place_in_view(rng, camera, obj, footprints, buffer_rects, room_half):
            transporters.append(obj)
    clutter: list[SceneObject] = []
    pillars = 0
    for _ in range(int(rng.integers(3, 11))):
        kind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
        if kind == "pillar" and pillars >= 2:
            kind = "bin"
        obj = SceneObject(kind, 0, 0, 0, distractor_parts(rng, kind, room_height))
        gap = 6.0 if kind == "pillar" else 2.5
        if _place_in_view(rng, camera, obj, footprints, buffer_rects, room_half, min_camera_gap=gap):
            if kind == "pillar" and any(segment_hits_box(camera.position, np.array([b.x, b.y, 0.0]), obj) for b in buffers):
                footprints.pop()  # a pillar hiding a buffer strip would only waste the frame
                continue
            pillars += kind == "pillar"
            clutter.append(obj)

    objects = buffers + pallets + loose + shelves + transporters + clutter
    for i, obj in enumerate(objects, start=1):
        obj.instance_id = i
    for buf in buffers:
        for p in pallets:
            if point_in_rect(*p.center[:2], (buf.x, buf.y, buf.half_extent[0], buf.half_extent[1], buf.yaw)):
                p.buffer_id = buf.instance_id

    light, floor, walls, lines, look = _appearance(rng, layout_yaw, buffers)
    return Scene(camera, room_half, room_height, objects, light, floor, walls, lines, look,
                 render_seed=int(rng.integers(2**31)))
