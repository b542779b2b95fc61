"""The RC car: an oriented box with a red body, dark tyres, a yellow roof stripe and a white nose.

`draw_car` composites the car (and its soft shadow) into one camera's frame, ray-casting only the pixels inside the
car's projected bounding box, so the per-sample cost does not grow with the resolution of the empty room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from admn_core.data.geometry import PinholeCamera
from admn_core.data.scene import Background, RoomConfig, lambert_shading


@dataclass(frozen=True)
class CarModel:
    # [ours] Twice GDTM's RC car (0.34 × 0.20 × 0.14 m), about a Clearpath Jackal: the tiny preset sees the room at
    # 64 × 64 px where GDTM's models see 224 × 224, and at 64 px the RC car is ≈ 4 × 2 px with a 14 cm relief that
    # depth noise hides — a depth-only model stayed on the mean-guess plateau; at this size it learns (README,
    # "The simulated world").
    length: float = 0.68  # metres, along the heading
    width: float = 0.40
    height: float = 0.28
    body: tuple[float, float, float] = (0.85, 0.07, 0.05)  # linear albedo: saturated red
    tyre: tuple[float, float, float] = (0.03, 0.03, 0.03)
    stripe: tuple[float, float, float] = (0.95, 0.8, 0.1)
    nose: tuple[float, float, float] = (0.92, 0.92, 0.92)

    @property
    def half_size(self) -> np.ndarray:
        return np.array([self.length / 2, self.width / 2, self.height / 2])

    def centre(self, xy) -> np.ndarray:
        return np.array([xy[0], xy[1], self.height / 2])

    def top_centre(self, xy) -> np.ndarray:
        """The roof's centre: the car point every elevated camera sees (used by the geometry tests)."""
        return np.array([xy[0], xy[1], self.height])


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # car → world


def car_pixel_box(camera: PinholeCamera, car: CarModel, xy, yaw: float, margin_m: float = 0.12):
    """(row0, row1, col0, col1) image window holding the car and its shadow, or None when out of view."""
    half = car.half_size + np.array([margin_m, margin_m, 0.0])
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    corners = car.centre(xy) + (signs * half) @ _yaw_matrix(yaw).T
    corners[:, 2] = np.maximum(corners[:, 2], 0.0)
    uv, z = camera.project(corners)
    if np.any(z < 0.05):  # the box straddles the camera plane: fall back to the whole frame
        return 0, camera.height, 0, camera.width
    col0, row0 = np.floor(uv.min(axis=0)).astype(int) - 1
    col1, row1 = np.ceil(uv.max(axis=0)).astype(int) + 1
    row0, col0 = max(row0, 0), max(col0, 0)
    row1, col1 = min(row1, camera.height), min(col1, camera.width)
    if row0 >= row1 or col0 >= col1:
        return None
    return row0, row1, col0, col1


def draw_car(radiance: np.ndarray, depth_m: np.ndarray, car_mask: np.ndarray, camera: PinholeCamera,
             ray_dirs: np.ndarray, background: Background, room: RoomConfig, car: CarModel, xy, yaw: float,
             light: float) -> None:
    """Composite the car into `radiance` [H, W, 3], `depth_m` [H, W] and `car_mask` [H, W] in place.

    `radiance` must already hold background × light; `ray_dirs` are the camera's [H, W, 3] world ray directions.
    """
    window = car_pixel_box(camera, car, xy, yaw)
    if window is None:
        return
    r0, r1, c0, c1 = window
    rotation = _yaw_matrix(yaw)
    centre = car.centre(xy)

    # Soft contact shadow on the floor under the car (ambient occlusion), before the car itself is drawn.
    floor = background.floor_mask[r0:r1, c0:c1]
    local_floor = (background.hit_points[r0:r1, c0:c1] - centre) @ rotation  # world → car frame
    falloff = (local_floor[..., 0] / (car.length * 0.75)) ** 2 + (local_floor[..., 1] / (car.width * 0.8)) ** 2
    shadow = 1.0 - 0.55 * np.exp(-falloff) * floor
    radiance[r0:r1, c0:c1] *= shadow[..., None].astype(np.float32)

    dirs = ray_dirs[r0:r1, c0:c1] @ rotation  # world → car frame (row vectors: Rᵀ d)
    origin = (camera.position - centre) @ rotation
    half = car.half_size
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / dirs
        t_low = (-half - origin) * inverse
        t_high = (half - origin) * inverse
    t_enter = np.minimum(t_low, t_high)
    t_near = np.max(t_enter, axis=-1)
    t_far = np.min(np.maximum(t_low, t_high), axis=-1)
    hit = (t_near <= t_far) & (t_near > 0) & (t_near < depth_m[r0:r1, c0:c1])
    if not hit.any():
        return
    face_axis = np.argmax(t_enter, axis=-1)
    local_hit = origin + t_near[..., None] * dirs
    local_normal = np.zeros(dirs.shape)
    np.put_along_axis(local_normal, face_axis[..., None],
                      -np.sign(np.take_along_axis(dirs, face_axis[..., None], -1)), axis=-1)

    albedo = np.broadcast_to(np.asarray(car.body), dirs.shape).copy()
    is_top = face_axis == 2
    is_side = ~is_top
    albedo[is_side & (local_hit[..., 2] < -half[2] + 0.045)] = car.tyre  # lower side band: tyres and chassis
    albedo[is_top & (np.abs(local_hit[..., 1]) < half[1] * 0.3)] = car.stripe
    albedo[(face_axis == 0) & (local_normal[..., 0] > 0)] = car.nose

    world_hit = centre + local_hit @ rotation.T
    world_normal = local_normal @ rotation.T
    shading = lambert_shading(world_hit, world_normal, room)
    colour = (albedo * shading[..., None] * light).astype(np.float32)
    radiance[r0:r1, c0:c1][hit] = colour[hit]
    depth_m[r0:r1, c0:c1][hit] = t_near[hit]
    car_mask[r0:r1, c0:c1][hit] = True
