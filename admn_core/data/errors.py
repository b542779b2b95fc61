"""Errors raised by `admn_core.data`. Every message names the file or field at fault."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Base class for every data-layer error."""


class DatasetFileError(DataError):
    """A dataset file is missing, unreadable or not in the expected layout; `path` names it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CacheFormatError(DatasetFileError):
    """A world/dataset cache directory is incomplete, of another format version, or inconsistent."""


class CorruptionError(DataError, ValueError):
    """A corruption was asked for with an invalid severity or parameter."""


class WorldConfigError(DataError, ValueError):
    """A world configuration value is invalid; the message names the field."""


class BagWriteError(DataError):
    """A trajectory bag could not be written (bad path, unknown storage, missing `rosbags`)."""
