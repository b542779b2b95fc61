"""rosbag2 files: reading, offline evaluation exactly as the node would, live replay over DDS, reports and plots."""
