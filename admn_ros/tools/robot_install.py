"""What a robot's venv must get from pip: requirements/runtime.txt less what the ROS install (apt, rosdep) provides.

    python -m admn_ros.tools.robot_install plan [--requirements FILE ...] [--constraints FILE] [--out DIR]

Run by scripts/robot-install.sh with the python of a venv made with --system-site-packages over the ROS install, so
that this interpreter sees apt's packages. A requirement counts as provided when its module imports from here
(apt's python3-opencv ships cv2 without pip metadata, so distributions are matched by module). It writes
DIR/requirements.txt (only the missing ones) and DIR/constraints.txt: the project's pins, with each provided
distribution pinned to the version installed here instead, so pip resolves against apt's torch and numpy and never
installs a second copy (an incompatible requirement then fails to resolve, loudly, instead).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

from admn_ros.tools.share import SOURCE_TREE

# Requirement name (lower case) -> module it installs, where the two differ.
MODULES = {"opencv-python-headless": "cv2", "opencv-python": "cv2", "pyyaml": "yaml", "pillow": "PIL"}
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_names(path: Path) -> list[str]:
    names = []
    for line in Path(path).read_text().splitlines():
        match = NAME.match(line.split("#", 1)[0])
        if match:
            names.append(match.group(1))
    return names


def provided_version(requirement: str) -> str | None:
    """The version this interpreter already has (its module imports), '' when the module has no pip metadata."""
    module = MODULES.get(requirement.lower(), requirement.replace("-", "_"))
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(requirement)
    except importlib.metadata.PackageNotFoundError:
        return ""


def plan(requirements: list[Path], constraints: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """-> (requirements pip must install, constraint lines, {provided requirement: version here or ''})."""
    wanted = [name for path in requirements for name in requirement_names(path)]
    provided = {name: version for name in wanted if (version := provided_version(name)) is not None}
    pins = []
    for line in constraints.read_text().splitlines():
        match = NAME.match(line.split("#", 1)[0])
        if match and match.group(1).lower() in {name.lower() for name in provided}:
            continue
        pins.append(line)
    pins += [f"{name}=={version}" for name, version in provided.items() if version]
    missing = [name for name in wanted if name not in provided]
    return missing, pins, provided


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="admn_robot_install", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["plan"])
    parser.add_argument("--requirements", type=Path, nargs="+",
                        default=[SOURCE_TREE / "requirements" / "runtime.txt"])
    parser.add_argument("--constraints", type=Path, default=SOURCE_TREE / "requirements" / "constraints.txt")
    parser.add_argument("--out", type=Path, required=True, help="folder for requirements.txt and constraints.txt")
    args = parser.parse_args(argv)
    try:
        missing, pins, provided = plan(args.requirements, args.constraints)
    except OSError as error:
        print(f"admn_robot_install: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requirements.txt").write_text("".join(f"{name}\n" for name in missing))
    (args.out / "constraints.txt").write_text("\n".join(pins) + "\n")
    for name, version in provided.items():
        print(f"provided by the system: {name} {version or '(no pip metadata)'}")
    print(f"to install with pip: {' '.join(missing) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
