"""Run the flight agent as a separate process, as a rig (and every end-to-end test) does."""

from __future__ import annotations

import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

# The agent asks to die with its parent (PR_SET_PDEATHSIG, flight/lifetime.py), and Linux takes the *thread* that
# forked it for its parent: an agent started from a thread that ended while this process lived on got SIGTERM then
# (found in audit). One daemon thread forks every agent: it lives until the process ends (a pool's thread is shut
# down as the main thread ends, other threads still running: found in review), and ends with it, as they should.
_requests: queue.Queue | None = None
_spawner_lock = threading.Lock()


def _spawner(requests: queue.Queue) -> None:
    while True:
        args, popen, box, done = requests.get()
        try:
            box.append(subprocess.Popen(args, **popen))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            box.append(exc)
        done.set()


def _spawn(args: list[str], **popen: object) -> subprocess.Popen:
    global _requests
    with _spawner_lock:
        if _requests is None:
            _requests = queue.Queue()
            threading.Thread(target=_spawner, args=(_requests,), name="agent-spawner", daemon=True).start()
        requests = _requests
    box: list[object] = []
    done = threading.Event()
    requests.put((args, popen, box, done))
    try:
        done.wait()
    except KeyboardInterrupt:  # the fork goes on in the spawner: its child is stopped, not left untracked
        done.wait()
        if box and isinstance(box[0], subprocess.Popen):
            box[0].kill()
            box[0].wait()
        raise
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]  # type: ignore[return-value]


def _forget_spawner() -> None:
    """A forked child has none of its parent's threads: it makes its own spawner."""
    global _requests, _spawner_lock
    _requests, _spawner_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_spawner)


class AgentProcess:
    """``sunlit-flight run`` in a child process; stderr goes to a log file for post-mortems."""

    def __init__(self, link_url: str, log_path: Path, extra_args: Sequence[str] = ()):
        self.link_url = link_url
        self.log_path = Path(log_path)
        # The agent stops with whoever started it (a test, a campaign's worker), even one killed -9.
        self.args = [sys.executable, "-m", "flight", "run", "--link", link_url, "--parent-pid", str(os.getpid()),
                     *extra_args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The child has its own copy of the descriptor; ours is closed whether or not it started (found in audit:
        # a Popen that raised, an executable gone, left the log open for as long as its traceback lived).
        with open(self.log_path, "ab") as log:
            self.proc = _spawn(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if it will not go; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut looks like to the agent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "AgentProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000  # below it: well-known and commonly configured services


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux's default, 32768, if unreadable)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_tcp_port_pair() -> int:
    """A port P with P and P+1 both free on loopback (a ZeroMQ link's commands and telemetry).

    Drawn below the kernel's ephemeral range where it leaves room: a port the kernel chooses
    for ``bind(0)`` is one any outgoing connection may take before the agent binds it, a
    second later (bench.security's agent on a 16-core machine once found P+1 taken). A
    system RNG, not ``random``'s seeded one, so parallel test workers do not draw alike.
    """
    low = _ephemeral_low()
    draw = random.SystemRandom()
    for _ in range(50):
        if low - 2 > _LOWEST_PORT:
            port = draw.randrange(_LOWEST_PORT, low - 2)
        else:  # no room below the range: the kernel's choice, as before
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port >= 65534:
                continue
        if all(_bindable(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free pair of TCP ports on loopback")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
