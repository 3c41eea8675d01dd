"""CPU ray casting of a warehouse scene with numpy: shaded RGB, exact metric depth, instance ids.

Every object is a union of yawed boxes; the room is one big box seen from inside. Instead of looping over
pixels, or over parts with one numpy call per part (hundreds of small parts would be all overhead), each
box is paired with the pixels of its screen-space bounding rectangle and all (pixel, box) pairs are tested
in a few vectorised slab tests, in chunks of bounded size; the nearest hit per pixel wins (a z-buffer via
`np.minimum.at`). Hard shadows from one directional light reuse the same pairing with shadow rays.
Vectors are kept as separate x, y, z arrays: numpy reductions over a trailing axis of 3 are slow.

Depth is z-depth (distance along the optical axis) in metres, for every pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smolrgpt.synth.scene import (
    BUFFER, SHELF, TEX_CARDBOARD, TEX_HAZARD, TEX_METAL, TEX_WOOD, TEX_WRAP, Scene, rect_corners,
)

NEAR = 0.05            # boxes closer than this to the camera plane are tested against the whole image
PAIR_CHUNK = 1 << 20   # (pixel, box) pairs per vectorised batch: bounds memory at any resolution
GAMMA_LUT = (np.linspace(0.0, 1.0, 4096) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


@dataclass
class Rendering:
    rgb: np.ndarray                # (H, W, 3) uint8
    depth: np.ndarray              # (H, W) float32, metres along the optical axis
    instances: np.ndarray          # (H, W) uint16, 0 = room (floor outside buffers, walls, ceiling)
    visible_pixels: np.ndarray     # (n_objects + 1,) pixels of each instance id in `instances`
    silhouette_pixels: np.ndarray  # (n_objects + 1,) pixels each object would cover with nothing in front
    centroids: np.ndarray          # (n_objects + 1, 2) mean (u, v) of visible pixels; nan when unseen


@dataclass
class Boxes:
    """Yawed boxes in struct-of-arrays form (float32 columns, one row per box)."""
    cx: np.ndarray
    cy: np.ndarray
    cz: np.ndarray
    hx: np.ndarray
    hy: np.ndarray
    hz: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    owner: np.ndarray  # instance id
    part: np.ndarray   # index into the part table, or -1 for a whole-object box

    @classmethod
    def build(cls, rows: list[tuple]) -> "Boxes":
        cols = np.array(rows, dtype=np.float64).reshape(-1, 10)
        f = [cols[:, k].astype(np.float32) for k in range(8)]
        return cls(*f, cols[:, 8].astype(np.int32), cols[:, 9].astype(np.int32))

    def __len__(self) -> int:
        return len(self.owner)

    def corners(self) -> np.ndarray:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        lx, ly, lz = (signs[None, :, k] * h[:, None] for k, h in enumerate((self.hx, self.hy, self.hz)))
        c, s = self.cos[:, None].astype(np.float64), self.sin[:, None].astype(np.float64)
        return np.stack([c * lx - s * ly + self.cx[:, None], s * lx + c * ly + self.cy[:, None], lz + self.cz[:, None]], -1)


def _part_boxes(scene: Scene) -> tuple[Boxes, list]:
    rows, table = [], []
    for obj in scene.objects:
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        for p in obj.parts:
            ox, oy, oz = p.offset
            rows.append((obj.x + c * ox - s * oy, obj.y + s * ox + c * oy, oz, *p.half, c, s, obj.instance_id, len(table)))
            table.append(p)
    return Boxes.build(rows), table


def _shadow_casters(scene: Scene) -> Boxes:
    """Whole-object boxes, except open shelves whose parts cast the shadow (a solid block would look wrong)."""
    rows = []
    index = 0
    for obj in scene.objects:
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        if obj.cls == SHELF:
            for p in obj.parts:
                ox, oy, oz = p.offset
                rows.append((obj.x + c * ox - s * oy, obj.y + s * ox + c * oy, oz, *p.half, c, s, obj.instance_id, index))
                index += 1
        elif obj.parts:
            centre, size = obj.center, obj.size
            rows.append((*centre, *(size / 2), c, s, obj.instance_id, -1))
            index += len(obj.parts)
    return Boxes.build(rows)


def _screen_rects(scene: Scene, corners: np.ndarray):
    """Integer pixel rectangles [v0, v1) x [u0, u1) covering each box's projection (empty when unseen)."""
    cam = scene.camera
    n, k = corners.shape[:2]
    uv, z = cam.project(corners.reshape(-1, 3))
    u, v, z = uv[:, 0].reshape(n, k), uv[:, 1].reshape(n, k), z.reshape(n, k)
    behind = z < NEAR
    straddle = behind.any(1)  # the projection is unbounded: test the whole image
    u0 = np.where(straddle, 0, np.floor(u.min(1)) - 1)
    v0 = np.where(straddle, 0, np.floor(v.min(1)) - 1)
    u1 = np.where(straddle, cam.width, np.ceil(u.max(1)) + 1)
    v1 = np.where(straddle, cam.height, np.ceil(v.max(1)) + 1)
    u0, u1 = np.clip(u0, 0, cam.width).astype(np.int64), np.clip(u1, 0, cam.width).astype(np.int64)
    v0, v1 = np.clip(v0, 0, cam.height).astype(np.int64), np.clip(v1, 0, cam.height).astype(np.int64)
    empty = behind.all(1) | (u1 <= u0) | (v1 <= v0)
    return v0, np.where(empty, v0, v1), u0, np.where(empty, u0, u1)


def _pair_chunks(v0, v1, u0, u1, width: int):
    """Yield (box index, flat pixel index) arrays for consecutive runs of boxes, each <= PAIR_CHUNK pairs
    (a single box larger than that is a chunk of its own)."""
    areas = (v1 - v0) * (u1 - u0)
    ends = np.cumsum(areas)
    start = 0
    while start < len(areas):
        base = ends[start] - areas[start]
        stop = max(int(np.searchsorted(ends, base + PAIR_CHUNK, side="right")), start + 1)
        a = areas[start:stop]
        box = np.repeat(np.arange(start, stop), a)
        k = np.arange(a.sum()) - np.repeat(np.cumsum(a) - a, a)
        w = (u1 - u0)[box]
        yield box, (v0[box] + k // w) * width + u0[box] + k % w
        start = stop


def _slab(o, d, h):
    """Ray/box slab test per pair in box coordinates: (t_near, t_far, per-axis entry t)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        entry = []
        t_far = None
        for ok, dk, hk in zip(o, d, h):
            inv = 1.0 / dk
            t1, t2 = (-hk - ok) * inv, (hk - ok) * inv
            entry.append(np.minimum(t1, t2))
            far = np.maximum(t1, t2)
            t_far = far if t_far is None else np.minimum(t_far, far)
    return np.maximum(np.maximum(entry[0], entry[1]), entry[2]), t_far, entry


def _rotate(c, s, x, y):
    return c * x + s * y, c * y - s * x


def _noise(tile: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a wrapping random tile: value noise in [-1, 1] tied to surface coordinates."""
    wrap = tile.shape[0] - 1  # the tile side is a power of two
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    i0, j0 = x0.astype(np.int32) & wrap, y0.astype(np.int32) & wrap
    i1, j1 = (i0 + 1) & wrap, (j0 + 1) & wrap
    top = tile[j0, i0] * (1 - fx) + tile[j0, i1] * fx
    return top * (1 - fy) + (tile[j1, i0] * (1 - fx) + tile[j1, i1] * fx) * fy


def _floor_rect_pixels(scene: Scene, px, py, candidates: np.ndarray, rect):
    """Flat pixel indices among `candidates` (2-D bool) whose floor point lies in a yawed rectangle."""
    cx, cy, hx, hy, yaw = rect
    cam = scene.camera
    corners = np.concatenate([rect_corners(cx, cy, hx, hy, yaw), np.zeros((4, 1))], 1)
    v0, v1, u0, u1 = (int(x[0]) for x in _screen_rects(scene, corners[None]))
    if v1 <= v0 or u1 <= u0:
        return None
    sub = (slice(v0, v1), slice(u0, u1))
    c, s = math.cos(yaw), math.sin(yaw)
    lx, ly = _rotate(c, s, px[sub] - cx, py[sub] - cy)
    inside = candidates[sub] & (np.abs(lx) <= hx) & (np.abs(ly) <= hy)
    rows, cols = np.nonzero(inside)
    return (rows + v0) * cam.width + cols + u0, lx[inside], ly[inside]


def render(scene: Scene) -> Rendering:
    cam = scene.camera
    h, w = cam.height, cam.width
    n_obj = len(scene.objects)
    rng = np.random.default_rng(scene.render_seed)
    ox, oy, oz = (float(v) for v in cam.position)
    rot = cam.rotation.astype(np.float32)
    xs = ((np.arange(w) + 0.5 - cam.cx) / cam.fx).astype(np.float32)
    ys = ((np.arange(h) + 0.5 - cam.cy) / cam.fy).astype(np.float32)
    # Unnormalised rays with camera-z component 1, so the ray parameter t *is* z-depth.
    dx, dy, dz = ((xs[None, :] * rot[0, k] + ys[:, None] * rot[1, k] + rot[2, k]).ravel() for k in range(3))

    # The room: where the ray leaves a box we stand in.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_wall_x = np.where(dx > 0, scene.room_half[0] - ox, -scene.room_half[0] - ox) / dx
        t_wall_y = np.where(dy > 0, scene.room_half[1] - oy, -scene.room_half[1] - oy) / dy
        t_floor_ceiling = np.where(dz > 0, scene.room_height - oz, -oz) / dz
    # A ray parallel to a wall pair never meets it (0 division gives -inf or nan there).
    t_wall_x, t_wall_y, t_floor_ceiling = (np.where(t > 0, t, np.inf) for t in (t_wall_x, t_wall_y, t_floor_ceiling))
    depth = np.minimum(np.minimum(t_wall_x, t_wall_y), t_floor_ceiling).astype(np.float32)
    room_floor = (t_floor_ceiling <= np.minimum(t_wall_x, t_wall_y)) & (dz < 0)
    room_ceiling = (t_floor_ceiling <= np.minimum(t_wall_x, t_wall_y)) & (dz > 0)
    wall_is_x = t_wall_x <= t_wall_y

    # Parts: nearest hit per pixel.
    boxes, part_table = _part_boxes(scene)
    part_id = np.full(h * w, -1, dtype=np.int32)
    face = np.zeros(h * w, dtype=np.int8)  # axis (0, 1, 2) of the visible face, in the part's frame
    silhouette = np.zeros(n_obj + 1, dtype=np.int64)
    if len(boxes):
        lox, loy = _rotate(boxes.cos, boxes.sin, np.float32(ox) - boxes.cx, np.float32(oy) - boxes.cy)
        loz = np.float32(oz) - boxes.cz
        # Silhouettes: a bitmap of the pixels the current object covers, ignoring occluders. Boxes come
        # grouped by object, so an object is one run of boxes even when it spans two chunks.
        seen, current = np.zeros(h * w, dtype=bool), -1
        for b, pix in _pair_chunks(*_screen_rects(scene, boxes.corners()), w):
            c, s = boxes.cos[b], boxes.sin[b]
            lx, ly = _rotate(c, s, dx[pix], dy[pix])
            t_near, t_far, entry = _slab((lox[b], loy[b], loz[b]), (lx, ly, dz[pix]), (boxes.hx[b], boxes.hy[b], boxes.hz[b]))
            hit = (t_near <= t_far) & (t_near > NEAR)
            b, pix, t_near = b[hit], pix[hit], t_near[hit]
            owners = boxes.owner[b]
            bounds = np.flatnonzero(np.diff(owners)) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, owners.size]) if owners.size else ():
                if owners[lo] != current:
                    seen[:], current = False, owners[lo]
                before = np.count_nonzero(seen)
                seen[pix[lo:hi]] = True  # parts of one object overlap on screen: count each pixel once
                silhouette[current] += np.count_nonzero(seen) - before
            np.minimum.at(depth, pix, t_near)
            win = t_near <= depth[pix]
            pw = pix[win]
            part_id[pw] = b[win]
            ex, ey = entry[0][hit][win], entry[1][hit][win]
            face[pw] = np.where((ex >= ey) & (ex >= t_near[win]), 0, np.where(ey >= t_near[win], 1, 2))
    on_part = part_id >= 0
    instances = np.where(on_part, boxes.owner[np.maximum(part_id, 0)] if len(boxes) else 0, 0).astype(np.uint16)
    px, py, pz = ox + depth * dx, oy + depth * dy, oz + depth * dz

    # Albedo and normals of the room.
    albedo = np.empty((h * w, 3), dtype=np.float32)
    nx, ny, nz = (np.zeros(h * w, dtype=np.float32) for _ in range(3))
    tile = rng.uniform(-1, 1, (64, 64)).astype(np.float32)
    on_floor = room_floor & ~on_part
    fl = scene.floor
    fx_, fy_ = px[on_floor] / fl["texel_m"], py[on_floor] / fl["texel_m"]
    shade = 1 + fl["noise"] * (_noise(tile, fx_, fy_) + 0.5 * _noise(tile, fx_ * 3.1 + 7, fy_ * 3.1 + 3))
    if fl["tile_m"] > 0:
        gx = np.abs((px[on_floor] / fl["tile_m"] + 0.5) % 1.0 - 0.5) * fl["tile_m"]
        gy = np.abs((py[on_floor] / fl["tile_m"] + 0.5) % 1.0 - 0.5) * fl["tile_m"]
        shade = np.where((gx < 0.015) | (gy < 0.015), shade * fl["tile_dark"], shade)
    albedo[on_floor] = np.asarray(fl["color"], dtype=np.float32) * shade[:, None]
    nz[room_floor] = 1
    walls = ~room_floor & ~room_ceiling & ~on_part
    along = np.where(wall_is_x[walls], py[walls], px[walls])
    panel = np.where(np.abs((along / scene.walls["panel_m"]) % 1.0 - 0.5) > 0.48, 0.8, 1.0)
    panel = np.where(pz[walls] < 1.2, panel * 0.7, panel).astype(np.float32)
    albedo[walls] = np.asarray(scene.walls["color"], dtype=np.float32) * panel[:, None]
    nx[walls & wall_is_x] = -np.sign(dx[walls & wall_is_x])
    ny[walls & ~wall_is_x] = -np.sign(dy[walls & ~wall_is_x])
    albedo[room_ceiling & ~on_part] = scene.walls["ceiling"]
    nz[room_ceiling] = -1

    # Paint: walkway lines, then buffer strips (their visible pixels become the buffer's instance).
    px2, py2 = px.reshape(h, w), py.reshape(h, w)
    for line in scene.lines:
        got = _floor_rect_pixels(scene, px2, py2, on_floor.reshape(h, w),
                                 (line["cx"], line["cy"], line["half_x"], line["half_y"], line["yaw"]))
        if got is not None:
            albedo[got[0]] = np.asarray(line["color"], dtype=np.float32) * 0.9
    for obj in scene.objects:
        if obj.cls != BUFFER:
            continue
        hx, hy = obj.half_extent
        got = _floor_rect_pixels(scene, px2, py2, room_floor.reshape(h, w), (obj.x, obj.y, hx, hy, obj.yaw))
        if got is None:
            continue
        pix, lx, ly = got
        silhouette[obj.instance_id] = pix.size  # floor under a pallet still belongs to the strip's extent
        seen = ~on_part[pix]
        pix, lx, ly = pix[seen], lx[seen], ly[seen]
        instances[pix] = obj.instance_id
        paint = np.asarray(obj.paint["color"], dtype=np.float32)
        lw = obj.paint["line_half_width"] * 2
        border = (hx - np.abs(lx) < lw) | (hy - np.abs(ly) < lw)
        fill = obj.paint["fill"]
        albedo[pix] = np.where(border[:, None], paint, albedo[pix] * (1 - fill) + paint * fill)

    if on_part.any():
        _shade_parts(boxes, part_table, np.nonzero(on_part)[0], part_id, face, (px, py, pz), (dx, dy, dz),
                     albedo, (nx, ny, nz), tile)

    # Light: ambient + Lambert, hard shadows.
    light = np.asarray(scene.light["direction"], dtype=np.float64)
    light /= np.linalg.norm(light)
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, None)
    shadow = _shadows(scene, light, (px, py, pz), part_id, instances, lambert > 0)
    lit = scene.light["ambient"] + scene.light["intensity"] * lambert * ~shadow
    rgb = albedo * (lit[:, None] * np.asarray(scene.light["color"], dtype=np.float32))

    # Sensor: exposure, colour gains, vignetting, noise, gamma.
    look = scene.look
    rgb = rgb.reshape(h, w, 3) * (look["exposure"] * np.asarray(look["gains"], dtype=np.float32))
    r2 = ((np.arange(w) - w / 2) / (w / 2))[None, :] ** 2 + ((np.arange(h) - h / 2) / (w / 2))[:, None] ** 2
    rgb *= (1 - look["vignette"] * r2 / 2).astype(np.float32)[..., None]
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(look["noise"])
    rgb8 = GAMMA_LUT[(np.clip(rgb, 0, 1) * 4095 + 0.5).astype(np.int32)]

    flat = instances.astype(np.int64)
    visible = np.bincount(flat, minlength=n_obj + 1)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.stack([np.bincount(flat, cols, n_obj + 1), np.bincount(flat, rows, n_obj + 1)], 1) / visible[:, None]
    return Rendering(rgb8, depth.reshape(h, w), instances.reshape(h, w), visible, silhouette, centroids)


def _shade_parts(boxes: Boxes, part_table: list, pix, part_id, face, points, dirs, albedo, normals, tile) -> None:
    """Base colour, surface pattern and normal of every pixel showing a part."""
    pid = part_id[pix]
    c, s = boxes.cos[pid], boxes.sin[pid]
    lx, ly = _rotate(c, s, points[0][pix] - boxes.cx[pid], points[1][pix] - boxes.cy[pid])
    lz = points[2][pix] - boxes.cz[pid]
    hx, hy, hz = boxes.hx[pid], boxes.hy[pid], boxes.hz[pid]
    axis = face[pix]
    ddx, ddy = _rotate(c, s, dirs[0][pix], dirs[1][pix])
    # The visible face points against the ray along its axis.
    nlx = np.where(axis == 0, -np.sign(ddx), 0).astype(np.float32)
    nly = np.where(axis == 1, -np.sign(ddy), 0).astype(np.float32)
    normals[0][pix] = c * nlx - s * nly
    normals[1][pix] = s * nlx + c * nly
    normals[2][pix] = np.where(axis == 2, -np.sign(dirs[2][pix]), 0)
    # Dark edges make stacked cartons and pallet boards read as separate boxes.
    ex = np.where(axis == 0, np.inf, hx - np.abs(lx))
    ey = np.where(axis == 1, np.inf, hy - np.abs(ly))
    ez = np.where(axis == 2, np.inf, hz - np.abs(lz))
    mod = np.where(np.minimum(np.minimum(ex, ey), ez) < 0.012, 0.72, 1.0).astype(np.float32)
    tex = np.array([p.texture for p in part_table], dtype=np.int8)[pid]
    color = np.array([p.color for p in part_table], dtype=np.float32)[pid]
    top = axis == 2
    wood = tex == TEX_WOOD
    gaps = ((lx + hx) / 0.16) % 1.0 < 0.2
    mod = np.where(wood & top & gaps, mod * 0.5, mod)
    mod = np.where(wood, mod * (1 + 0.12 * _noise(tile, lx * 20 + 5, ly * 1.5 + lz * 9)), mod)
    mod = np.where((tex == TEX_CARDBOARD) & top & (np.abs(ly) < 0.03), mod * 1.25, mod)
    mod = np.where(tex == TEX_WRAP, mod * (1.08 + 0.15 * _noise(tile, lx * 3 + ly * 3, lz * 12)), mod)
    mod = np.where(tex == TEX_METAL, mod * (1 + 0.05 * _noise(tile, lx * 30, lz * 30)), mod)
    mod = np.where((tex == TEX_HAZARD) & (((lx + ly + lz) / 0.15) % 1.0 < 0.5), mod * 0.08, mod)
    albedo[pix] = color * mod[:, None]


def _shadows(scene: Scene, light: np.ndarray, points, part_id, instances, lit_side) -> np.ndarray:
    """True where the way to the light is blocked. A box never shadows its own pixels."""
    casters = _shadow_casters(scene)
    shadow = np.zeros(part_id.size, dtype=bool)
    if not len(casters):
        return shadow
    corners = casters.corners()
    on_floor = corners - (corners[..., 2:3] / light[2]) * light  # where each corner's shadow lands
    lx_c, ly_c = _rotate(casters.cos, casters.sin, np.float32(light[0]), np.float32(light[1]))
    lz = np.float32(light[2])
    owners = instances.ravel()
    for b, pix in _pair_chunks(*_screen_rects(scene, np.concatenate([corners, on_floor], 1)), scene.camera.width):
        own = np.where(casters.part[b] >= 0, part_id[pix] == casters.part[b], owners[pix] == casters.owner[b])
        keep = lit_side[pix] & ~own
        b, pix = b[keep], pix[keep]
        c, s = casters.cos[b], casters.sin[b]
        ox, oy = _rotate(c, s, points[0][pix] - casters.cx[b], points[1][pix] - casters.cy[b])
        oz = points[2][pix] - casters.cz[b]
        t_near, t_far, _ = _slab((ox, oy, oz), (lx_c[b], ly_c[b], lz), (casters.hx[b], casters.hy[b], casters.hz[b]))
        shadow[pix[(t_near <= t_far) & (t_far > 1e-3)]] = True
    return shadow
