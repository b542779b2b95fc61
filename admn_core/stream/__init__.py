"""Stream processing of timestamped sensor messages, without ROS: synchronization (`admn_core.stream.sync`)."""
