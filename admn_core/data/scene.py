"""The static room: textured floor with the track, walls, ceiling, clutter boxes and one ceiling light.

Cameras are fixed, so each camera's view of the static room is ray-cast once (`render_background`) and every
sample only composites the car on top (`car.py`). All arrays are per pixel of one camera: [H, W] or [H, W, 3].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from admn_core.data.geometry import PinholeCamera
from admn_core.data.trajectory import TrackConfig

FAR = 1e6  # "no hit" ray parameter


@dataclass(frozen=True)
class Box:
    """Axis-aligned box: centre and half-size in metres, linear RGB albedo in [0, 1]."""

    centre: tuple[float, float, float]
    half_size: tuple[float, float, float]
    albedo: tuple[float, float, float]


DEFAULT_CLUTTER = (
    Box((2.45, 2.6, 0.375), (0.4, 0.3, 0.375), (0.55, 0.38, 0.22)),  # wooden cabinet
    Box((-2.6, -2.3, 0.25), (0.25, 0.25, 0.25), (0.04, 0.04, 0.05)),  # black speaker: dark → depth dropouts
    Box((-2.5, 2.4, 0.45), (0.5, 0.35, 0.45), (0.2, 0.35, 0.6)),  # blue shelf
    Box((2.6, -2.4, 0.15), (0.3, 0.2, 0.15), (0.75, 0.75, 0.7)),  # white crate
)


@dataclass(frozen=True)
class RoomConfig:
    half_extent: tuple[float, float] = (3.2, 3.5)  # walls at x = ±3.2 m, y = ±3.5 m
    height: float = 2.8
    light_position: tuple[float, float, float] = (0.0, 0.0, 2.7)
    ambient: float = 0.35
    clutter: tuple[Box, ...] = DEFAULT_CLUTTER


@dataclass(frozen=True)
class Background:
    """One camera's view of the empty room (no car)."""

    radiance: np.ndarray  # [H, W, 3] float32 linear colour in [0, ~1] at nominal light
    depth_m: np.ndarray  # [H, W] float32 z-depth in metres
    hit_points: np.ndarray  # [H, W, 3] float32 world coordinates of each pixel's surface
    floor_mask: np.ndarray  # [H, W] bool: the pixel sees the floor (car shadows fall only there)
    dropout_probability: np.ndarray  # [H, W] float32 chance a depth return is missing (dark, grazing, edges)


def _value_noise(rng: np.random.Generator, points_xy: np.ndarray, cell: float, extent: float) -> np.ndarray:
    """Smooth random texture in [0, 1] at world points [..., 2]: bilinear interpolation of a random lattice."""
    cells = int(math.ceil(2 * extent / cell)) + 2
    lattice = rng.random((cells, cells))
    grid = (points_xy + extent) / cell
    grid = np.clip(grid, 0, cells - 1.001)
    i0 = np.floor(grid).astype(int)
    frac = grid - i0
    frac = frac * frac * (3 - 2 * frac)  # smoothstep: no lattice-aligned creases
    fx, fy = frac[..., 0], frac[..., 1]
    a = lattice[i0[..., 0], i0[..., 1]]
    b = lattice[i0[..., 0] + 1, i0[..., 1]]
    c = lattice[i0[..., 0], i0[..., 1] + 1]
    d = lattice[i0[..., 0] + 1, i0[..., 1] + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def superellipse_distance(points_xy: np.ndarray, half_extent: tuple[float, float], exponent: float) -> np.ndarray:
    """Approximate signed distance (metres, negative inside) to a superellipse; exact enough for tape lines."""
    a, b = half_extent
    x, y = np.abs(points_xy[..., 0]) / a, np.abs(points_xy[..., 1]) / b
    level = (x**exponent + y**exponent) ** (1.0 / exponent)  # 1 on the curve, homogeneous of degree 1
    return (level - 1.0) * min(a, b)


def floor_albedo(points_xy: np.ndarray, track: TrackConfig, rng: np.random.Generator) -> np.ndarray:
    """[..., 3] albedo of the floor: concrete, a grey track mat, white tape on both track edges."""
    concrete = 0.45 + 0.15 * _value_noise(rng, points_xy, 0.35, 4.0) + 0.05 * _value_noise(rng, points_xy, 0.07, 4.0)
    albedo = np.stack([concrete, concrete * 0.97, concrete * 0.92], axis=-1)
    outer = superellipse_distance(points_xy, track.outer_half_extent, track.exponent)
    inner_extent = (track.centre_half_extent[0] - track.lane_half_width,
                    track.centre_half_extent[1] - track.lane_half_width)
    inner = superellipse_distance(points_xy, inner_extent, track.exponent)
    on_mat = (outer < 0) & (inner > 0)
    mat = 0.28 + 0.04 * _value_noise(rng, points_xy, 0.1, 4.0)
    albedo[on_mat] = np.stack([mat, mat, mat * 1.1], axis=-1)[on_mat]
    tape = (np.abs(outer) < 0.03) | (np.abs(inner) < 0.03)
    albedo[tape] = (0.9, 0.9, 0.88)
    # Start line across the lane at y = 0 on the +x side: a visual landmark, like GDTM's taped start.
    start = on_mat & (np.abs(points_xy[..., 1]) < 0.025) & (points_xy[..., 0] > 0)
    albedo[start] = (0.85, 0.8, 0.2)
    return albedo


def wall_albedo(points: np.ndarray, normal_axis: int, rng: np.random.Generator) -> np.ndarray:
    """[..., 3] albedo of a wall: painted plaster, a dark baseboard, a few posters for texture."""
    along = points[..., 1 - normal_axis]  # the horizontal coordinate along the wall
    height = points[..., 2]
    paint = 0.7 + 0.05 * _value_noise(rng, np.stack([along, height], -1), 0.5, 4.0)
    albedo = np.stack([paint, paint * 0.95, paint * 0.85], axis=-1)
    albedo[height < 0.1] = (0.15, 0.13, 0.12)
    for centre, colour in ((-1.2, (0.2, 0.5, 0.3)), (0.9, (0.6, 0.2, 0.5)), (2.2, (0.2, 0.3, 0.7))):
        poster = (np.abs(along - centre) < 0.3) & (np.abs(height - 1.5) < 0.4)
        albedo[poster] = colour
    return albedo


def render_background(camera: PinholeCamera, room: RoomConfig, track: TrackConfig, seed: int) -> Background:
    """Ray-cast the empty room for one camera (done once per camera; the car is composited per sample)."""
    rng = np.random.default_rng(seed)
    dirs = camera.ray_directions()  # [H, W, 3], camera-z = 1 → t is z-depth
    origin = camera.position
    h, w = dirs.shape[:2]
    best_t = np.full((h, w), FAR)
    normals = np.zeros((h, w, 3))
    surface = np.zeros((h, w), dtype=np.int8)  # 0 floor, 1 wall-x, 2 wall-y, 3 ceiling, 4+ clutter box index

    def consider(t: np.ndarray, normal, surface_id: int) -> None:
        closer = (t > 1e-6) & (t < best_t)
        best_t[closer] = t[closer]
        normals[closer] = normal[closer] if isinstance(normal, np.ndarray) and normal.ndim == 3 else normal
        surface[closer] = surface_id

    with np.errstate(divide="ignore", invalid="ignore"):
        consider(np.where(dirs[..., 2] < 0, -origin[2] / dirs[..., 2], FAR), (0, 0, 1), 0)
        consider(np.where(dirs[..., 2] > 0, (room.height - origin[2]) / dirs[..., 2], FAR), (0, 0, -1), 3)
        for axis, surface_id in ((0, 1), (1, 2)):
            for sign in (-1.0, 1.0):
                wall = sign * room.half_extent[axis]
                t = (wall - origin[axis]) / dirs[..., axis]
                normal = np.zeros(3)
                normal[axis] = -sign
                consider(np.where(np.isfinite(t), t, FAR), normal, surface_id)
        for index, box in enumerate(room.clutter):
            t, normal = _ray_box(origin, dirs, np.asarray(box.centre), np.asarray(box.half_size))
            consider(t, normal, 4 + index)

    hits = origin + best_t[..., None] * dirs
    albedo = np.zeros((h, w, 3))
    floor = surface == 0
    albedo[floor] = floor_albedo(hits[floor][:, :2], track, rng)
    for surface_id, axis in ((1, 0), (2, 1)):
        on_wall = surface == surface_id
        albedo[on_wall] = wall_albedo(hits[on_wall], axis, rng)
    albedo[surface == 3] = (0.85, 0.85, 0.85)
    for index, box in enumerate(room.clutter):
        albedo[surface == 4 + index] = box.albedo

    shading = lambert_shading(hits, normals, room)
    radiance = (albedo * shading[..., None]).astype(np.float32)

    # Depth-sensor failure modes (IR time-of-flight / structured light): dark surfaces return too little light,
    # grazing surfaces scatter it away, and depth edges mix foreground and background (flying pixels).
    view_dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    cos_incidence = np.abs(np.sum(view_dirs * normals, axis=-1))
    luminance = albedo @ np.array([0.3, 0.59, 0.11])
    dropout = np.where(luminance < 0.1, 0.6, 0.0)
    dropout = np.maximum(dropout, np.clip((0.2 - cos_incidence) / 0.2, 0, 1) * 0.8)
    dropout = np.maximum(dropout, depth_edges(best_t.astype(np.float32), surface) * 0.5)
    return Background(radiance=radiance, depth_m=best_t.astype(np.float32), hit_points=hits.astype(np.float32),
                      floor_mask=floor, dropout_probability=dropout.astype(np.float32))


def lambert_shading(points: np.ndarray, normals: np.ndarray, room: RoomConfig) -> np.ndarray:
    """Ambient + diffuse light from the ceiling lamp with soft distance falloff; ≈1 on the floor under the lamp."""
    to_light = np.asarray(room.light_position) - points
    distance_sq = np.sum(to_light * to_light, axis=-1)
    cos_light = np.clip(np.sum(to_light * normals, axis=-1) / np.sqrt(distance_sq), 0.0, 1.0)
    falloff = (room.light_position[2] ** 2 + 4.0) / (distance_sq + 4.0)
    return room.ambient + (1.0 - room.ambient) * cos_light * falloff


def depth_edges(depth_m: np.ndarray, surface: np.ndarray, relative_jump: float = 0.05) -> np.ndarray:
    """[H, W] bool: a 4-neighbour lies on another surface more than `relative_jump` (of the depth) away.

    Requiring a surface change keeps smooth but steep surfaces (the far floor at low resolution) edge-free.
    """
    jump = np.zeros(depth_m.shape, dtype=bool)
    vertical = (np.abs(np.diff(depth_m, axis=0)) > relative_jump * depth_m[1:]) & (np.diff(surface, axis=0) != 0)
    horizontal = ((np.abs(np.diff(depth_m, axis=1)) > relative_jump * depth_m[:, 1:])
                  & (np.diff(surface, axis=1) != 0))
    jump[1:] |= vertical
    jump[:-1] |= vertical
    jump[:, 1:] |= horizontal
    jump[:, :-1] |= horizontal
    return jump


def _ray_box(origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, half: np.ndarray):
    """Slab test of rays (origin [3], dirs [..., 3]) against an axis-aligned box → (t [...], normal [..., 3])."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / dirs
        t_low = (centre - half - origin) * inverse
        t_high = (centre + half - origin) * inverse
    t_enter = np.minimum(t_low, t_high)
    t_exit = np.maximum(t_low, t_high)
    t_near = np.nanmax(t_enter, axis=-1)
    t_far = np.nanmin(t_exit, axis=-1)
    hit = (t_near <= t_far) & (t_far > 0) & (t_near > 0)
    axis = np.argmax(np.nan_to_num(t_enter, nan=-FAR), axis=-1)
    normal = np.zeros(dirs.shape)
    np.put_along_axis(normal, axis[..., None], -np.sign(np.take_along_axis(dirs, axis[..., None], -1)), axis=-1)
    return np.where(hit, t_near, FAR), normal
