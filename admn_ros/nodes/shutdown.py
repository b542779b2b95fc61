"""Run a node until SIGINT or SIGTERM, then shut down cleanly: exit code 0, no traceback.

`rclpy.init(signal_handler_options=SignalHandlerOptions.ALL)` installs rclpy's own SIGINT and SIGTERM handlers: a
signal shuts the rclpy context down and wakes the executor, whose spin then ends with `ExternalShutdownException`
(SIGINT may surface as `KeyboardInterrupt` instead). A signal does not wait for a convenient moment, though: it can land
while the node is still being built (admn_node loads its model for seconds) or while a callback is publishing, and the
next rclpy call on the shut-down context then raises `RCLError` ("context is not valid"). Such an error is the
shutdown itself, not a fault: once the context reads not ok, it ends the process like the signal that caused it.
A signal before rclpy.init has installed the handlers (the process is still importing) gets Python's default action.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

EXIT_OK, EXIT_CANNOT_START = 0, 2


def _leave_sigint_to_rclpy(signal_number, frame) -> None:
    """Python-level SIGINT handler that does nothing: rclpy's own handler (installed over it) does the shutdown."""


def spin_until_shutdown(make_node: Callable, name: str, startup_errors: tuple[type[BaseException], ...] = (),
                        args: list[str] | None = None) -> int:
    """rclpy.init (SIGINT + SIGTERM handlers) → make_node() → spin a SingleThreadedExecutor until a signal or
    `rclpy.shutdown()` → destroy the node → shut rclpy down. Returns the process exit code.

    0 after a signal or shutdown, wherever it landed. An exception of `startup_errors` raised by `make_node` (a
    misconfiguration) prints one line naming the problem, without a traceback, and returns 2. Any other exception
    while the context is still up is a bug and propagates.

    SingleThreadedExecutor because MultiThreadedExecutor busy-loops under use_sim_time; nodes run their slow work on
    their own threads. Start-up objects are frozen before spinning
    (`admn_ros.tools.processes.freeze_start_up_objects`)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.logging import get_logger
    from rclpy.signals import SignalHandlerOptions

    from admn_ros.tools.processes import freeze_start_up_objects

    # SIGINT ends the process as SIGTERM does: rclpy's handler shuts the context down and spin returns. Python's
    # default SIGINT handler, which rclpy chains to, would also raise KeyboardInterrupt at whatever bytecode runs
    # next — possibly inside an rclpy entity's use — and tearing such an entity down has crashed the middleware.
    signal.signal(signal.SIGINT, _leave_sigint_to_rclpy)
    with rclpy.init(args=args if args is not None else sys.argv,
                    signal_handler_options=SignalHandlerOptions.ALL) as initialized:
        context = initialized.context
        # Before the node: an executor half-built on a shut-down context leaves an "Exception ignored" traceback.
        executor = SingleThreadedExecutor(context=context)
        node = None
        try:
            try:
                node = make_node()
            except startup_errors as error:
                if not context.ok():
                    raise  # a signal landed mid-start-up: handled below as the shutdown it is
                print(f"{name}: cannot start: {error}", file=sys.stderr)
                return EXIT_CANNOT_START
            freeze_start_up_objects()
            executor.add_node(node)
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception as error:
            if context.ok():
                raise
            get_logger(name).debug(f"shutting down; an rclpy call raced the shutdown: {error}")
        finally:
            executor.shutdown()
            if node is not None:
                node.destroy_node()
    return EXIT_OK
