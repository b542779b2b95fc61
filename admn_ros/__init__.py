"""ROS 2 side of ADMN: the perception node, the thermal monitor, bring-up and rosbag replay evaluation."""

import admn_core  # noqa: F401  (first: it caps PyTorch's OpenMP spin before any module here imports torch)
