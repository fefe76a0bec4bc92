"""The agent's side of the compute worker: start it, feed it admission, watch it, restart it.

The worker (flight.compute.worker) is a separate process so a hung ONNX Runtime session
cannot stall control. Every control tick the supervisor sends the power manager's
admission with threads, batch size and duty cycle for the power mode in force; the worker
reports status every second. Silence longer than ``compute_watchdog_s`` (real seconds:
the worker runs in real time) means a hang: the worker is killed and started again, and
its jobs resume from their checkpoints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

if TYPE_CHECKING:
    from flight.agent.agent import Agent

MAX_PENDING = 100  # job messages held while the worker (re)starts
CLASS_NAMES = {"0": "infer_clear", "1": "infer_cloudy"}  # the shipped cloud-screening model's classes


class ComputeSupervisor:
    def __init__(self, agent: "Agent", root: Path, enabled: bool):
        self.agent = agent
        self.root = Path(root)
        self.enabled = enabled
        self.state = "OFF"
        self.restarts = 0
        self.proc: subprocess.Popen | None = None
        self.status: dict[str, Any] = {}
        self.threads = 1
        self.duty = 0.0
        self._last_seen = time.monotonic()
        self._rate = (0, time.monotonic(), 0.0)  # (count, when, rate)
        self._sock: zmq.Socket | None = None
        self._pending: list[dict[str, Any]] = []  # job messages for a worker not yet connected
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)
            self.endpoint = f"ipc://{self.root}/worker.sock"
            self._sock = zmq.Context.instance().socket(zmq.ROUTER)
            self._sock.linger = 0
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._sock.bind(self.endpoint)

    def pollables(self) -> list[Any]:
        return [self._sock] if self._sock is not None else []

    def start(self) -> None:
        if not self.enabled:
            return
        log = open(self.root / "worker.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flight.compute.worker", "--endpoint", self.endpoint, "--root", str(self.root)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        self.state = "STARTING"
        self._last_seen = time.monotonic()

    # --- from the worker -----------------------------------------------------------------

    def receive(self) -> None:
        if self._sock is None:
            return
        for _ in range(1000):
            try:
                _identity, raw = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:  # not two frames
                continue
            try:
                msg = msgpack.unpackb(raw, raw=False)
                kind = msg.get("type")
            except (ValueError, AttributeError, msgpack.ExtraData):
                continue
            self._last_seen = time.monotonic()
            if kind == "hello":
                self.state = "RUNNING"
                self.agent.emit("COMPUTE_STARTED", pid=int(msg.get("pid", 0)))
                pending, self._pending = self._pending, []
                for job_msg in pending:
                    self._deliver(job_msg)
            elif kind == "status":
                self.state = "RUNNING"
                self.status = msg
                self._update_rate(int(msg.get("infer_count", 0)))
            elif kind == "event":
                try:
                    self.agent.emit(str(msg.get("name")), **dict(msg.get("args") or {}))
                except (KeyError, ValueError, TypeError) as exc:
                    self.agent.emit("INTERNAL_ERROR", where="compute event", reason=f"{exc}"[:200])

    def _update_rate(self, count: int) -> None:
        last_count, last_t, rate = self._rate
        now = time.monotonic()
        if now > last_t and count >= last_count:
            rate = (count - last_count) / (now - last_t)
        self._rate = (count, now, rate)

    # --- to the worker -------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.send_multipart([b"compute", msgpack.packb(msg, use_bin_type=True)], zmq.NOBLOCK)
            return True
        except (zmq.Again, zmq.ZMQError):
            return False  # not connected (starting or restarting): the next tick sends again

    def admit(self, admission: str, mode_index: int, n_modes: int, power_w: float | None, reason: str) -> None:
        """Threads, batch and duty follow the power mode: the lowest mode gets one thread, small
        batches and a quarter duty; the highest all cores, large batches and full duty."""
        if not self.enabled:
            return
        share = (mode_index + 1) / max(1, n_modes)
        self.threads = max(1, round((os.cpu_count() or 1) * share))
        batch = 16 if share <= 0.34 else (32 if share <= 0.67 else 64)
        self.duty = max(0.25, share) if admission != "NONE" else 0.0
        self._send({"type": "admit", "admission": admission, "threads": self.threads, "batch": batch,
                    "duty": max(self.duty, 0.05), "power_w": power_w, "reason": reason[:200]})
        self._watchdog()

    def _deliver(self, msg: dict[str, Any]) -> bool:
        """Send a job message now, or hold it until the worker says hello; False if the hold is full."""
        if self.state == "RUNNING" and self._send(msg):
            return True
        if len(self._pending) >= MAX_PENDING:
            return False
        self._pending.append(msg)
        return True

    def submit(self, job: dict[str, Any]) -> bool:
        return self._deliver({"type": "job", "op": "start", "job": job})

    def install_model(self, name: str, version: str, sha256: str, golden: bool) -> bool:
        return self._deliver({"type": "model", "op": "install", "name": name, "version": version,
                              "sha256": sha256, "golden": golden})

    def cancel(self, job_id: int) -> bool:
        return self._deliver({"type": "job", "op": "cancel", "job_id": job_id})

    def _watchdog(self) -> None:
        limit = self.agent.params["compute_watchdog_s"]
        silent = time.monotonic() - self._last_seen
        dead = self.proc is not None and self.proc.poll() is not None
        if self.enabled and (silent > limit or dead):
            self.agent.emit("COMPUTE_HUNG", age_s=silent)
            self.agent.controller.record_fault("compute worker")
            self._kill()
            self.restarts += 1
            self.state = "DOWN"
            self.start()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        """Stop the worker cleanly (it checkpoints training first); kill it if it will not go."""
        if self.proc is not None and self.proc.poll() is None:
            if not (self.state == "RUNNING" and self._send({"type": "stop"})):
                self.proc.send_signal(signal.SIGTERM)  # not connected yet: the signal says the same
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._sock is not None:
            self._sock.close(0)

    # --- housekeeping --------------------------------------------------------------------

    def hk(self) -> dict[str, Any]:
        st = self.status
        classes = st.get("infer_classes") or {}
        out = {
            "compute_state": self.state,
            "compute_provider": st.get("provider") or None,
            "compute_restarts": self.restarts,
            "compute_pid": self.proc.pid if self.proc is not None and self.proc.poll() is None else 0,
            "compute_threads": self.threads,
            "compute_duty": self.duty,
            "infer_rate_per_s": self._rate[2],
        }
        for key in ("jobs_queued", "job_id", "job_kind", "infer_count", "infer_confidence_mean", "train_step",
                    "train_loss", "train_accuracy", "train_steps_per_s", "train_energy_per_step_j", "products"):
            out[key] = st.get(key)
        for cls, channel in CLASS_NAMES.items():
            out[channel] = classes.get(cls, 0) if st else None
        return out
