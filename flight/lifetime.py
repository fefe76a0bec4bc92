"""A child that must not outlive the process that started it (pure stdlib, Linux-first).

The compute worker must not outlive its agent (a restarted agent would find two workers on
one directory), and an agent started by a harness or a test must not outlive it (it would
fly a dead campaign and hold its link). Linux sends the child SIGTERM when its parent dies
(PR_SET_PDEATHSIG), which the agent and the worker both handle as a clean stop; elsewhere the
caller's own parent-pid checks are all there is.
"""

from __future__ import annotations

import os
import signal


def die_with_parent(parent_pid: int | None) -> bool:
    """Ask for SIGTERM when the parent dies; False when ``parent_pid`` is already gone (the
    parent died before the request took: the process is now someone else's child)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux
    return parent_pid is None or os.getppid() == parent_pid
