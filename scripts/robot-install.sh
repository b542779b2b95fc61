#!/usr/bin/env bash
# Install admn_ros's Python dependencies on a robot with ROS 2 (Debian 12 / Ubuntu 24.04 refuse a system-wide
# `pip install`: PEP 668). Run after `rosdep install --from-paths src --ignore-src -y` (apt's torch, opencv, numpy ...)
# with the ROS environment sourced:
#   scripts/robot-install.sh [--dry-run] VENV
# makes VENV with --system-site-packages (so it sees the ROS install and apt's packages) and pip-installs only what
# they do not provide, pinned by requirements/constraints.txt except that every provided distribution keeps the
# version installed (admn_ros.tools.robot_install): never a second torch. --dry-run prints the plan and the pip
# command instead of running pip. Then build with this venv's python (docs/install.md).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && { DRY_RUN=1; shift; }
[ $# -eq 1 ] || { echo "usage: $0 [--dry-run] VENV" >&2; exit 2; }
VENV="$1"

"$PYTHON" -c 'import rclpy' 2>/dev/null || {
  echo "robot-install: rclpy does not import with $PYTHON: source the ROS 2 setup first" \
       "(source /opt/ros/\$ROS_DISTRO/setup.bash) and run rosdep install (docs/install.md)" >&2
  exit 1
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -c 'import sys; sys.exit(sys.base_prefix == sys.prefix)' \
  || { echo "robot-install: $VENV/bin/python is not a venv" >&2; exit 1; }
grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" \
  || { echo "robot-install: $VENV was made without --system-site-packages; it would not see apt's torch" >&2; exit 1; }

PLAN="$VENV/admn-robot-install"
(cd "$REPO" && "$VENV/bin/python" -m admn_ros.tools.robot_install plan --out "$PLAN")
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$PLAN/constraints.txt" -r "$PLAN/requirements.txt")
if [ ! -s "$PLAN/requirements.txt" ]; then
  echo "robot-install: the system provides every requirement; nothing to install"
elif [ "$DRY_RUN" -eq 1 ]; then
  echo "robot-install: would run: ${PIP[*]}"
else
  "${PIP[@]}"
fi
echo "robot-install: done. Build with this venv: source $VENV/bin/activate && python -m colcon build (docs/install.md)"
