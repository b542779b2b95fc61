"""The files the package ships (config/, launch/, models/, package.xml), found wherever the package is installed.

Search order: the package's share directory in the ament index (a colcon install, or a venv registered by
`make venv`), then <sys.prefix>/share/admn_ros (a plain `pip install .`), then the source tree (a checkout).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "admn_ros"
REFERENCE_MODEL = "reference_tiny_rgbd.safetensors"  # the trained bundle in models/
SOURCE_TREE = Path(__file__).resolve().parents[2]  # admn_ros/tools/share.py -> the repository


def share_roots() -> list[Path]:
    roots = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        pass
    else:
        try:
            roots.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, OSError, ValueError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    return [*roots, Path(sys.prefix) / "share" / PACKAGE, SOURCE_TREE]


def share_file(relative: str) -> Path:
    """The first `<root>/<relative>` that is a file; FileNotFoundError naming every place searched."""
    roots = share_roots()
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{relative} not found in any of: {', '.join(str(root) for root in roots)}")


def config_file(name: str) -> Path:
    return share_file(f"config/{name}")


def reference_model() -> Path:
    """The shipped reference model (models/reference_tiny_rgbd.safetensors), the default of the launch file,
    admn_bringup and the demo; FileNotFoundError naming every place searched."""
    return share_file(f"models/{REFERENCE_MODEL}")


def config_dir() -> Path:
    """The config/ folder holding the shipped node parameters (admn_node.yaml and its siblings)."""
    return config_file("admn_node.yaml").parent
