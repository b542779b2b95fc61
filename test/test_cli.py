import subprocess
import sys

from admn_core.cli import main as admn_main


def test_flops_command_prints_a_row_per_budget(capsys):
    assert admn_main(["flops", "--preset", "tiny"]) == 0
    output = capsys.readouterr().out
    rows = [line for line in output.splitlines() if line.strip()[:2].strip().isdigit()]
    assert [int(row.split()[0]) for row in rows] == [3, 6, 8, 12, 16, 24, 36]


def test_make_bundle_then_info(tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    assert admn_main(["make-bundle", "--preset", "tiny", "--out", str(path), "--controllers", "6", "12"]) == 0
    assert admn_main(["info", str(path)]) == 0
    output = capsys.readouterr().out
    assert "controller budget_6: budget 6" in output and "controller budget_12: budget 12" in output


def test_bad_bundle_is_an_error_message_not_a_traceback(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x00" * 20)
    completed = subprocess.run([sys.executable, "-m", "admn_core.cli", "info", str(bogus)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "bogus.safetensors" in completed.stderr and "Traceback" not in completed.stderr


def test_world_commands_run_through_the_main_command(tmp_path):
    bag = tmp_path / "run.bag"
    assert admn_main(["world-bag", "--out", str(bag), "--duration", "1"]) == 0
    assert bag.exists() and any(bag.iterdir())
