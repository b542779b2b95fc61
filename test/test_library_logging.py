"""admn_core reports progress through `logging` module loggers; the `admn` command shows them on stderr in one
format, and --quiet keeps only warnings."""

import logging
import subprocess
import sys

from admn_core.data.cache import write_cache


def test_cache_writing_reports_through_its_module_logger(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="admn_core"):
        write_cache(tmp_path / "cache", 2, "clean", seed=1)
    (record,) = [r for r in caplog.records if r.name == "admn_core.data.cache"]
    assert record.levelno == logging.INFO and record.getMessage().startswith("wrote 2 samples (clean)")


def admn(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "admn_core.cli", *arguments], capture_output=True, text=True,
                          timeout=300)


def test_admn_command_logs_progress_on_stderr_and_quiet_keeps_only_warnings(tmp_path):
    shown = admn("world-generate", "--out", str(tmp_path / "a"), "--samples", "2", "--preset", "clean",
                 "--resolution", "16")
    assert shown.returncode == 0, shown.stderr
    assert " INFO admn_core.data.cache: wrote 2 samples (clean)" in shown.stderr
    quiet = admn("--quiet", "world-generate", "--out", str(tmp_path / "b"), "--samples", "2", "--preset", "clean",
                 "--resolution", "16")
    assert quiet.returncode == 0, quiet.stderr
    assert (tmp_path / "b" / "manifest.json").is_file()
    assert "wrote 2 samples" not in quiet.stderr
