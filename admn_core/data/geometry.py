"""Pinhole cameras in the world frame (REP-103: x forward, y left, z up; the floor is z = 0).

Camera frame is the ROS optical frame: x right, y down, z forward. Pixel (row i, column j) covers
u ∈ [j, j+1), v ∈ [i, i+1); its centre is (j + 0.5, i + 0.5). ROS CameraInfo puts pixel centres on integers,
so its principal point is ours minus 0.5 (see `PinholeCamera.ros_k`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from admn_core.data.errors import WorldConfigError


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics (fx, fy, cx, cy in pixels), image size and the pose in the world frame.

    `rotation` is world→camera (rows are the camera's x, y, z axes in world coordinates);
    a world point p maps to camera coordinates rotation @ (p − position).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray  # [3, 3] world → camera
    position: np.ndarray  # [3] camera centre in the world frame, metres

    @classmethod
    def look_at(cls, position, target, width: int, height: int, horizontal_fov_deg: float) -> PinholeCamera:
        if width < 2 or height < 2:
            raise WorldConfigError(f"camera resolution must be at least 2×2, got {width}×{height}")
        if not 10.0 <= horizontal_fov_deg <= 170.0:
            raise WorldConfigError(f"horizontal_fov_deg must be in [10, 170], got {horizontal_fov_deg}")
        position = np.asarray(position, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, (0.0, 0.0, 1.0))  # forward × up = right (REP-103 is right-handed)
        if np.linalg.norm(right) < 1e-6:
            raise WorldConfigError("camera cannot look straight up or down")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        focal = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
        return cls(width=width, height=height, fx=focal, fy=focal, cx=width / 2.0, cy=height / 2.0,
                   rotation=np.stack([right, down, forward]), position=position)

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """[..., 3] world points → [..., 3] camera-frame points (z = depth along the optical axis)."""
        return (np.asarray(points_world, dtype=np.float64) - self.position) @ self.rotation.T

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[..., 3] world points → ([..., 2] continuous pixel coordinates (u, v), [...] z-depth in metres).

        Points behind the camera get z ≤ 0; their (u, v) are meaningless and callers must mask them.
        """
        camera_points = self.to_camera(points_world)
        z = camera_points[..., 2]
        safe_z = np.where(np.abs(z) < 1e-9, 1e-9, z)
        u = self.fx * camera_points[..., 0] / safe_z + self.cx
        v = self.fy * camera_points[..., 1] / safe_z + self.cy
        return np.stack([u, v], axis=-1), z

    def pixel_of(self, point_world) -> tuple[int, int]:
        """(row, column) of the pixel a world point falls in (may lie outside the image)."""
        uv, _ = self.project(np.asarray(point_world, dtype=np.float64))
        return int(math.floor(uv[1])), int(math.floor(uv[0]))

    def ray_directions(self) -> np.ndarray:
        """[H, W, 3] world-frame ray directions through pixel centres, scaled so the camera-frame z is 1.

        With this scaling the ray parameter t of a hit equals the hit's z-depth, which is what depth cameras report.
        """
        columns = (np.arange(self.width) + 0.5 - self.cx) / self.fx
        rows = (np.arange(self.height) + 0.5 - self.cy) / self.fy
        camera_dirs = np.stack(np.broadcast_arrays(columns[None, :], rows[:, None], 1.0), axis=-1)
        return camera_dirs @ self.rotation  # camera → world is rotation.T, applied to row vectors

    def ros_k(self) -> list[float]:
        """Row-major 3×3 intrinsic matrix in ROS CameraInfo convention (pixel centres on integers)."""
        return [self.fx, 0.0, self.cx - 0.5, 0.0, self.fy, self.cy - 0.5, 0.0, 0.0, 1.0]


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) quaternion of a rotation by `yaw` radians about +z."""
    return (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a proper 3×3 rotation matrix (Shepperd's method, numerically safe)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        return ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
    q = [0.0, 0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (m[j, i] + m[i, j]) / s
    q[k] = (m[k, i] + m[i, k]) / s
    q[3] = (m[k, j] - m[j, k]) / s
    return (q[0], q[1], q[2], q[3])
