"""ROS 2 side of ADMN: the perception node, the thermal monitor, bring-up and rosbag replay evaluation."""
