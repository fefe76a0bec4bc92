"""A tiny sd_notify(3) client: tell systemd the agent is ready, alive, or stopping.

systemd runs the agent as ``Type=notify`` with ``WatchdogSec=`` (deploy/systemd/
sunlit-agent.service) and hands it two things in the environment:

- ``NOTIFY_SOCKET``: a Unix datagram socket, a path (``/run/systemd/notify``) or an
  abstract name written with a leading ``@`` (the kernel's leading NUL byte);
- ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): the watchdog period in microseconds, and the
  process it is meant for. Without a ``WATCHDOG=1`` within the period systemd kills the
  service with SIGABRT and, with ``Restart=on-failure``, starts it again.

A message is one datagram of ``KEY=VALUE`` lines (sd_notify(3)): ``READY=1`` once the
agent serves its link, ``WATCHDOG=1`` at least every half period, ``STOPPING=1`` when it
begins to stop, ``STATUS=...`` free text for ``systemctl status``.

No dependency (the libsystemd binding is not on a fresh JetPack), no state, no threads:
each call opens a socket, sends, closes. Nothing here raises: outside systemd (a desk, the
tests, the HIL harness) there is no ``NOTIFY_SOCKET`` and every call returns False.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"

# sd_notify(3) itself sends with MSG_NOSIGNAL; a datagram to a full socket would block, so
# send without waiting: a dropped WATCHDOG=1 is retried half a period later anyway.
_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0) | getattr(socket, "MSG_DONTWAIT", 0)


def socket_address(env: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address to send to: a filesystem path, the bytes of an abstract name (leading
    NUL), or None where there is no usable ``NOTIFY_SOCKET``.

    >>> socket_address({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/123"})
    b'\\x00/org/freedesktop/systemd1/notify/123'
    >>> socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"})
    '/run/systemd/notify'
    >>> socket_address({}) is None
    True
    """
    env = os.environ if env is None else env
    name = env.get("NOTIFY_SOCKET", "")
    if name.startswith("@") and len(name) > 1:
        # The environment's bytes as they were (found in audit: a name not UTF-8, decoded with surrogateescape,
        # raised UnicodeEncodeError out of the agent's start)
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return name
    return None  # unset, empty, or a transport we do not speak (vsock:, since systemd 254)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (one or more ``KEY=VALUE`` lines) to systemd; True if it was sent.

    False outside systemd, and on any socket error: a service manager that cannot be told
    must never stop the agent.
    """
    if not state or "\0" in state:
        return False
    address = socket_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), _FLAGS, address)
    except OSError:
        return False
    return True


def watchdog_period_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog period systemd expects pings within, in seconds; None when none is set
    or it is meant for another process (``WATCHDOG_PID`` names a different PID, as in a
    child that inherited the environment).

    >>> watchdog_period_s({"WATCHDOG_USEC": "30000000"})
    30.0
    >>> watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    True
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1e6


def ping_interval_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half the period, as sd_watchdog_enabled(3) advises,
    so one late turn of the loop does not cost a restart. None without a watchdog."""
    period_s = watchdog_period_s(env, pid)
    return None if period_s is None else period_s / 2.0


def _status_line(text: str) -> str:
    """``text`` as one ``STATUS=`` line: whitespace (newlines above all) folded to spaces, so
    text that came from the link (a SHUTDOWN reason) cannot add lines such as ``WATCHDOG=trigger``."""
    text = " ".join(text.replace("\0", " ").split())
    return f"\nSTATUS={text}" if text else ""


def ready(status: str = "") -> bool:
    """``READY=1`` (with ``STATUS=`` if given): the agent is up and serving its link."""
    return notify(READY + _status_line(status))


def watchdog() -> bool:
    """``WATCHDOG=1``: the loop is still turning."""
    return notify(WATCHDOG)


def stopping(status: str = "") -> bool:
    """``STOPPING=1``: the agent has begun to stop; systemd waits for it to exit."""
    return notify(STOPPING + _status_line(status))


def status(text: str) -> bool:
    """``STATUS=text``: one line shown by ``systemctl status``."""
    return notify(_status_line(text).lstrip("\n"))


__all__ = [
    "READY",
    "STOPPING",
    "WATCHDOG",
    "notify",
    "ping_interval_s",
    "ready",
    "socket_address",
    "status",
    "stopping",
    "watchdog",
    "watchdog_period_s",
]
