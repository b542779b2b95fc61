"""Process plumbing (admn_ros.tools.processes) that the nodes' entry points share."""

import subprocess
import sys


def test_freeze_start_up_objects_collects_garbage_and_freezes_what_is_alive():
    # A fresh interpreter: freezing this test process would keep its later garbage from the collector.
    code = """
import gc, weakref
from admn_ros.tools.processes import freeze_start_up_objects
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
probe = weakref.ref(a)
del a, b
kept = Node()
frozen = freeze_start_up_objects()
print(probe() is None, frozen > 1000, gc.is_tracked(kept), gc.get_freeze_count() == frozen)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "True", "True"]
