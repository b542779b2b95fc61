"""Geometry of the simulated world: projection, rendering and depth agree with each other."""

import numpy as np
import pytest

from admn_core.data.world import World, WorldConfig


@pytest.fixture(scope="module")
def wide_world():
    return World(WorldConfig(image_size=(240, 320)))


def test_pixel_ray_and_projection_round_trip(wide_world):
    camera = wide_world.cameras["node_2"]
    dirs = camera.ray_directions()
    row, col = 100, 210
    point = camera.position + 2.5 * dirs[row, col]
    uv, z = camera.project(point)
    np.testing.assert_allclose(uv, [col + 0.5, row + 0.5], atol=1e-6)
    assert z == pytest.approx(2.5)  # rays are scaled so that the ray parameter is the z-depth


@pytest.mark.parametrize("view", ["node_1", "node_2", "node_3"])
def test_car_is_drawn_where_its_roof_projects_and_depth_matches(wide_world, view):
    position, heading = (0.4, -0.5), 0.3
    camera = wide_world.cameras[view]
    roof = wide_world.config.car.top_centre(position)
    row, col = camera.pixel_of(roof)
    assert 0 <= row < camera.height and 0 <= col < camera.width

    rng = np.random.default_rng(0)
    with_car, true_depth = wide_world.render_cameras(position, heading, 1.0, rng)
    empty, _ = wide_world.render_cameras((9.0, 9.0), heading, 1.0, np.random.default_rng(0))  # car outside room
    pixel = with_car[(view, "rgb")][row, col].astype(int)
    assert np.abs(pixel - empty[(view, "rgb")][row, col].astype(int)).max() > 40  # something new is drawn there
    assert pixel[2] < 0.5 * pixel[0]  # the roof stripe is yellow: much more red than blue

    # The pixel-centre ray meets the roof plane z = height at a z-depth of exactly (height − o_z) / d_z.
    ray = camera.ray_directions()[row, col]
    expected_z = (roof[2] - camera.position[2]) / ray[2]
    assert expected_z == pytest.approx(camera.to_camera(roof)[2], abs=0.05)
    assert true_depth[view][row, col] == pytest.approx(expected_z, abs=1e-4)
    measured = with_car[(view, "depth")][row - 1:row + 2, col - 1:col + 2].astype(float)
    valid = measured[measured > 0]
    assert valid.size >= 5
    assert np.median(valid) / 1000.0 == pytest.approx(expected_z, abs=0.06)  # sensor noise ≈ 1 + 2.5 z² mm


def test_depth_is_metric_on_the_empty_floor(wide_world):
    camera = wide_world.cameras["node_1"]
    floor_point = np.array([0.0, 0.0, 0.0])
    row, col = camera.pixel_of(floor_point)
    _, true_depth = wide_world.render_cameras((9.0, 9.0), 0.0, 1.0, np.random.default_rng(1))
    expected = camera.to_camera(floor_point)[2]
    assert true_depth["node_1"][row, col] == pytest.approx(expected, rel=0.02)


def test_resolutions_are_parametric():
    for size in [(64, 64), (96, 128)]:
        world = World(WorldConfig(image_size=size))
        sample, _ = world.generate(0, "mixed")
        assert sample[("node_1", "rgb")].shape == (*size, 3)
        assert sample[("node_3", "depth")].shape == size
        assert sample[("node_2", "mic")].shape == (world.config.window_samples,)
