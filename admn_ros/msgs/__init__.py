"""ROS messages <-> numpy: image and audio conversions, decoding into samples, QoS profiles, the
synchronizer's ROS side."""
