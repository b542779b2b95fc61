"""The rclpy nodes: admn_node (a thin adapter over admn_core.stream's frame pipeline) and thermal_monitor,
with their parameters, diagnostics, outputs and shutdown."""
