"""Data: the simulated GDTM-like world, sensor corruptions, the on-disk cache, real-dataset readers, bags.

Nothing here imports torch or ROS at module import time (the torch Dataset lives in `dataset.py`, bag writing
in `bag_writer.py`), so the world can be generated in lightweight worker processes.
"""
