"""A log that repeats each kind of message at most once per period, saying how many were suppressed."""

from __future__ import annotations

import collections
import threading
import time

LOG_THROTTLE_S = 5.0


class ThrottledLog:
    """`log(level, key, text)`: logs each key at most once per period; thread-safe.

    `logger` is anything with error/warning/info methods taking one string: a `logging.Logger` or an rclpy node's
    logger."""

    def __init__(self, logger, period_s: float = LOG_THROTTLE_S):
        self._logger, self._period = logger, period_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, level: str, key: str, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._suppressed[key] += 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        text += f" ({suppressed} similar message(s) suppressed)" if suppressed else ""
        # One call site per severity: rclpy's logger refuses a severity change at the same call site.
        if level == "error":
            self._logger.error(text)
        elif level == "warning":
            self._logger.warning(text)
        else:
            self._logger.info(text)
