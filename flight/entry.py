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
EXIT_NOT_INSTALLED = 69  # EX_UNAVAILABLE (sysexits.h): a library it needs is not installed for this Python; 3 is taken
OURS = ("flight", "ground", "hil", "bench")


def launch(target: str, prog: str, interrupted: int = EXIT_INTERRUPTED, args: tuple = ()) -> int:
    """Import ``target`` (``module:function``) and return what its function returns, given ``args``. Ctrl-C
    while the modules load, or one the function lets out, is said in one line and ends with ``interrupted``;
    a library missing for this Python (run outside the virtual environment) is said in one line too (found in
    audit: ModuleNotFoundError's traceback from every entry point). A module of ours missing is a fault: raised."""
    module, _, function = target.partition(":")
    try:
        try:
            return getattr(importlib.import_module(module), function)(*args)
        except ModuleNotFoundError as exc:  # as it loads, or a module its command loads when it needs it
            if not exc.name or exc.name.partition(".")[0] in OURS:
                raise
            print(f"{prog}: cannot load its modules: no module named {exc.name!r} for {sys.executable}; run it from "
                  "Sunlit's virtual environment (make test or make demo makes .venv; pip install -e . installs it)",
                  file=sys.stderr)
            return EXIT_NOT_INSTALLED
    except KeyboardInterrupt:
        try:
            print(f"{prog}: interrupted", file=sys.stderr)
        except OSError:  # a terminal that hung up: nothing to say it on
            pass
        return interrupted


def sunlit_flight() -> int:
    """``sunlit-flight`` (pyproject.toml's [project.scripts]) and ``python -m flight``."""
    return launch("flight.cli:main", "sunlit-flight")
