"""Entry points that load a command line's modules under its Ctrl-C guard.

Loading a CLI's modules (numpy, zmq, the dictionary) takes a fraction of a second, and a Ctrl-C
then raised KeyboardInterrupt inside an import, before the CLI's own handler was in place: a
traceback (found in audit). Here the import itself is inside the handler: one line, exit 130.
This module imports only what Python has loaded before any of ours (sys, importlib), so the
moment before the guard is the interpreter's own start. No ``from __future__`` import: it too
would be a module loaded outside the guard.
"""

import importlib
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command that Ctrl-C ended


def launch(target: str, prog: str, interrupted: int = EXIT_INTERRUPTED, args: tuple = ()) -> int:
    """Import ``target`` (``module:function``) and return what its function returns, given ``args``. Ctrl-C
    while the modules load, or one the function lets out, is said in one line and ends with ``interrupted``."""
    module, _, function = target.partition(":")
    try:
        return getattr(importlib.import_module(module), function)(*args)
    except KeyboardInterrupt:
        try:
            print(f"{prog}: interrupted", file=sys.stderr)
        except OSError:  # a terminal that hung up: nothing to say it on
            pass
        return interrupted


def sunlit_flight() -> int:
    """``sunlit-flight`` (pyproject.toml's [project.scripts]) and ``python -m flight``."""
    return launch("flight.cli:main", "sunlit-flight")
