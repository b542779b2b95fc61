"""Write a world trajectory as a rosbag2 (sqlite3 or mcap) with corruption episodes over time (via `rosbags`).

Topics (per view V; the names the perception node subscribes to):

    /V/camera/image_raw     sensor_msgs/msg/Image rgb8, frame V_camera_optical_frame, `camera_rate_hz`
    /V/camera/camera_info   sensor_msgs/msg/CameraInfo (depth is registered to the RGB camera: same intrinsics)
    /V/depth/image_raw      sensor_msgs/msg/Image 16UC1 millimetres (0 = no return), same stamps as the RGB
    /V/mic/audio            sensor_msgs/msg/Image 32FC1, height 1 (channels), width 320 (samples, 20 ms at
                            16 kHz); header.stamp = time of the LAST sample in the chunk; frame V_mic_frame.
                            No standard stamped audio message exists; this is the team's carrier (the rate is
                            fixed by config, 16000 Hz).
    /ground_truth/pose      geometry_msgs/msg/PoseStamped, frame "world", metres (REP-103), at camera rate
    /ground_truth/corruption diagnostic_msgs/msg/DiagnosticArray: one status per (view, modality), name
                            "V/modality", message = category, values category / severity / value; level OK when
                            clean, WARN for severity 1, ERROR above
    /clock                  rosgraph_msgs/msg/Clock, at every audio chunk (50 Hz)

Every message's bag timestamp equals its header stamp. Episodes (lights dimming, blur bursts, rain, a depth
sensor dropping out, a microphone going noisy) are placed at fixed fractions of the duration. What is written is a
`admn_core.data.trajectory_recording.TrajectoryRecording`: `trajectory_samples` gives the same recording as training
samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from admn_core.data.corruptions import CorruptionSpec
from admn_core.data.errors import BagWriteError
from admn_core.data.geometry import yaw_quaternion
from admn_core.data.trajectory_recording import AUDIO_CHUNK, Episode, TrajectoryRecording
from admn_core.data.world import World, WorldConfig
from admn_core.ros_interface import CAMERA_INFO_TOPIC, CLOCK_TOPIC, CORRUPTION_TOPIC, GROUND_TRUTH_TOPIC, sensor_topic


def _time_msg(types, seconds: float):
    nanoseconds = int(round(seconds * 1e9))
    return types["builtin_interfaces/msg/Time"](sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)


def write_trajectory_bag(path: str | Path, duration_s: float = 20.0, seed: int = 0, storage: str = "sqlite3",
                         world_config: WorldConfig | None = None, camera_rate_hz: float | None = None,
                         start_time_s: float = 1_700_000_000.0, episodes: tuple[Episode, ...] | None = None,
                         log=None) -> Path:
    """Drive one random trajectory for `duration_s` and write every sensor stream into a new bag at `path`."""
    try:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise BagWriteError("writing bags needs the `rosbags` package (pip install rosbags)") from None
    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise BagWriteError(f"storage must be sqlite3 or mcap, got {storage!r}")
    if duration_s <= 0:
        raise BagWriteError(f"duration_s must be > 0, got {duration_s}")
    path = Path(path)
    if path.exists():
        raise BagWriteError(f"{path}: already exists; rosbag2 writes a new directory")

    world = World(world_config or WorldConfig())
    config = world.config
    recording = TrajectoryRecording(world, duration_s, seed, camera_rate_hz, episodes)
    views = config.views
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    Header, Image = types["std_msgs/msg/Header"], types["sensor_msgs/msg/Image"]
    height, width = config.image_size

    def image_msg(stamp_s, frame_id, encoding, array, rows, cols, bytes_per_pixel):
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        return Image(header=Header(stamp=_time_msg(types, stamp_s), frame_id=frame_id), height=rows, width=cols,
                     encoding=encoding, is_bigendian=0, step=cols * bytes_per_pixel, data=data)

    with Writer(path, version=9, storage_plugin=plugins[storage]) as writer:
        def connect(topic, msgtype):
            return writer.add_connection(topic, msgtype, typestore=store)

        def write(connection, stamp_s, message):
            writer.write(connection, int(round(stamp_s * 1e9)), store.serialize_cdr(message, connection.msgtype))

        rgb_name, depth_name, mic_name = (world.kind_to_name.get(k) for k in ("rgb", "depth", "audio"))
        conns = {}
        for view in views:
            if rgb_name:
                conns[(view, "rgb")] = connect(f"/{sensor_topic('rgb', view)}", "sensor_msgs/msg/Image")
                conns[(view, "info")] = connect(f"/{CAMERA_INFO_TOPIC.format(view=view)}",
                                                "sensor_msgs/msg/CameraInfo")
            if depth_name:
                conns[(view, "depth")] = connect(f"/{sensor_topic('depth', view)}", "sensor_msgs/msg/Image")
            if mic_name:
                conns[(view, "mic")] = connect(f"/{sensor_topic('audio', view)}", "sensor_msgs/msg/Image")
        pose_conn = connect(GROUND_TRUTH_TOPIC, "geometry_msgs/msg/PoseStamped")
        label_conn = connect(CORRUPTION_TOPIC, "diagnostic_msgs/msg/DiagnosticArray")
        clock_conn = connect(CLOCK_TOPIC, "rosgraph_msgs/msg/Clock")

        # Camera, depth, ground truth and labels at camera rate.
        for frame in recording.frames():
            stamp = start_time_s + frame.t_s
            for view in views:
                camera = world.cameras[view]
                if rgb_name:
                    write(conns[(view, "rgb")], stamp, image_msg(stamp, f"{view}_camera_optical_frame", "rgb8",
                                                                 frame.sample[(view, rgb_name)], height, width, 3))
                    write(conns[(view, "info")], stamp, _camera_info(types, camera, stamp, view))
                if depth_name:
                    depth = frame.sample[(view, depth_name)].astype("<u2")
                    write(conns[(view, "depth")], stamp, image_msg(stamp, f"{view}_camera_optical_frame", "16UC1",
                                                                   depth, height, width, 2))
            write(pose_conn, stamp, _pose(types, stamp, frame.state))
            write(label_conn, stamp, _diagnostics(types, world, stamp, frame.plan))

        # Audio: the whole duration rendered continuously, corrupted per episode segment, then chunked.
        if mic_name:
            audio = recording.audio()
            for chunk in range(recording.audio_samples // AUDIO_CHUNK):
                stamp = start_time_s + recording.chunk_end_s(chunk)
                write(clock_conn, stamp, types["rosgraph_msgs/msg/Clock"](clock=_time_msg(types, stamp)))
                for view in views:
                    piece = audio[(view, mic_name)][chunk * AUDIO_CHUNK:(chunk + 1) * AUDIO_CHUNK].astype("<f4")
                    write(conns[(view, "mic")], stamp,
                          image_msg(stamp, f"{view}_mic_frame", "32FC1", piece, 1, AUDIO_CHUNK, 4))
        else:
            for frame in range(int(duration_s * 50)):
                stamp = start_time_s + frame / 50
                write(clock_conn, stamp, types["rosgraph_msgs/msg/Clock"](clock=_time_msg(types, stamp)))
    if log:
        log(f"wrote {duration_s:g} s trajectory bag ({storage}) to {path}")
    return path


def _camera_info(types, camera, stamp: float, view: str):
    k = camera.ros_k()
    return types["sensor_msgs/msg/CameraInfo"](
        header=types["std_msgs/msg/Header"](stamp=_time_msg(types, stamp), frame_id=f"{view}_camera_optical_frame"),
        height=camera.height, width=camera.width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array(k), r=np.eye(3).reshape(-1),
        p=np.array([k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _pose(types, stamp: float, state):
    qx, qy, qz, qw = yaw_quaternion(state.heading)
    return types["geometry_msgs/msg/PoseStamped"](
        header=types["std_msgs/msg/Header"](stamp=_time_msg(types, stamp), frame_id="world"),
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=state.position[0], y=state.position[1], z=0.0),
            orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))


def _diagnostics(types, world: World, stamp: float, plan: dict):
    Status, KeyValue = types["diagnostic_msgs/msg/DiagnosticStatus"], types["diagnostic_msgs/msg/KeyValue"]
    statuses = []
    for view, modality in world.sample_keys:
        spec = plan.get((view, modality), CorruptionSpec())
        level = 0 if spec.severity == 0 else (1 if spec.severity == 1 else 2)
        statuses.append(Status(
            level=level, name=f"{view}/{modality}", message=spec.category, hardware_id=view,
            values=[KeyValue(key="category", value=spec.category), KeyValue(key="severity", value=str(spec.severity)),
                    KeyValue(key="value", value=repr(float(spec.value)))]))
    return types["diagnostic_msgs/msg/DiagnosticArray"](
        header=types["std_msgs/msg/Header"](stamp=_time_msg(types, stamp), frame_id="world"), status=statuses)
