"""OpenMP's spin cap (admn_core.openmp_spin): importing admn_core changes no environment; an entry point relaunches
itself with the cap before its work, keeping a value the user set."""

import os
import subprocess
import sys
from pathlib import Path

from admn_core.openmp_spin import SPIN_COUNT

REPOSITORY = Path(__file__).resolve().parents[1]


def _fresh_python(arguments: list[str], python_path: str = "", **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | env
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [python_path, str(REPOSITORY)]))
    return subprocess.run([sys.executable, *arguments], env=environment, capture_output=True, text=True,
                          check=True, cwd=REPOSITORY).stdout.strip()


def test_importing_admn_core_changes_no_environment():
    code = ("import os, admn_core, admn_core.fastpath, admn_core.runtime, admn_core.cli; "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    assert _fresh_python(["-c", code]) == "None"


def test_relaunch_caps_the_spin_and_keeps_a_users_value(tmp_path):
    (tmp_path / "report_spin.py").write_text("import os, sys; print(os.environ.get('GOMP_SPINCOUNT'), sys.argv[1:])")
    code = ("import os; from admn_core.openmp_spin import relaunch_with_spin_cap; "
            "relaunch_with_spin_cap(['-m', 'report_spin', '--flag', 'a b']); "
            "print('not relaunched', os.environ['GOMP_SPINCOUNT'])")
    assert _fresh_python(["-c", code], str(tmp_path)) == f"{SPIN_COUNT} ['--flag', 'a b']"
    assert _fresh_python(["-c", code], str(tmp_path), GOMP_SPINCOUNT="123") == "not relaunched 123"
