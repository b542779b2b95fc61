"""Python `logging` records forwarded to an rclpy node's logger.

admn_core reports through module loggers (`logging.getLogger(__name__)`), never through ROS. A node that installs
this bridge gets those records on its own logger: the console in the node's format, /rosout and the log files, at
the matching severity and filtered by the node logger's level like the node's own messages.

    handler = forward_logging_to_node(node)   # "admn_core" and its children, INFO and above
    ...
    stop_forwarding(handler)
"""

from __future__ import annotations

import logging

from rclpy.logging import LoggingSeverity

LIBRARY_LOGGER = "admn_core"


def ros_severity(level: int) -> LoggingSeverity:
    """A `logging` level → the rcutils severity of the same rank (values below DEBUG count as DEBUG)."""
    for severity in (LoggingSeverity.FATAL, LoggingSeverity.ERROR, LoggingSeverity.WARN, LoggingSeverity.INFO):
        if level >= severity.value:
            return severity
    return LoggingSeverity.DEBUG


class NodeLogHandler(logging.Handler):
    """Emits each record on `node.get_logger()`, its text prefixed with the Python logger's name
    (e.g. "admn_core.train.pipeline: == stage1 ==") and followed by any exception traceback."""

    def __init__(self, node, level: int = logging.NOTSET):
        super().__init__(level)
        self.node_logger = node.get_logger()
        self.source: logging.Logger | None = None  # the Python logger it is installed on
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(self.format(record), ros_severity(record.levelno))
        except Exception:  # a logging call must never take the node down; logging reports it on stderr
            self.handleError(record)

    def _emit(self, text: str, severity: LoggingSeverity) -> None:
        # One call line per severity: rclpy keys each logging call site by its source line and refuses a severity
        # that differs from the one that line used before.
        if severity == LoggingSeverity.FATAL:
            self.node_logger.fatal(text)
        elif severity == LoggingSeverity.ERROR:
            self.node_logger.error(text)
        elif severity == LoggingSeverity.WARN:
            self.node_logger.warning(text)
        elif severity == LoggingSeverity.INFO:
            self.node_logger.info(text)
        else:
            self.node_logger.debug(text)


def forward_logging_to_node(node, logger_name: str = LIBRARY_LOGGER, level: int = logging.INFO) -> NodeLogHandler:
    """Install a `NodeLogHandler` on the Python logger `logger_name` and let records from `level` up through it.

    The Python logger's level is set to `level` (its default, inherited from the root, is WARNING, which would drop
    the library's progress messages); the node logger's own level still applies on top."""
    handler = NodeLogHandler(node)
    source = logging.getLogger(logger_name)
    source.setLevel(level)
    source.addHandler(handler)
    handler.source = source
    return handler


def stop_forwarding(handler: NodeLogHandler) -> None:
    """Detach a handler installed by `forward_logging_to_node` (e.g. before the node is destroyed)."""
    if handler.source is not None:
        handler.source.removeHandler(handler)
        handler.source = None
    handler.close()
