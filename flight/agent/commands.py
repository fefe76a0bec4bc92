"""The standard commands every Sunlit agent answers (cFS's NOOP/RESET_COUNTERS and more).

Handlers take the validated request and return a result map for the completion report,
or raise :class:`CommandFailed` with a code and reason. Guards run before the start report.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from flight.agent.compute import MAX_PENDING
from flight.agent.dispatcher import CommandFailed
from flight.agent.modes import Conditions, Mode, commanded_refusal
from flight.hal.base import HalError
from flight.link.dictionary import ArgumentError, FailureCode
from flight.link.messages import CommandRequest
from flight.orbit import Orbit, TleError

if TYPE_CHECKING:
    from flight.agent.agent import Agent


def register_standard_commands(agent: "Agent") -> None:
    d = agent.dispatcher

    def ping(req: CommandRequest) -> dict[str, Any]:
        token = req.args["token"]
        agent.emit("PING_RECEIVED", token=token)
        return {"token": token, "uptime_s": round(agent.clock.monotonic_s() - agent.started_s, 3),
                "dict_hash": agent.dictionary.version_hash, "mode": agent.mode.value, "boot_count": agent.state.boot_count}

    def reset_counters(req: CommandRequest) -> None:
        agent.dispatcher.counters.__init__()
        agent.link.stats.reset()
        agent.tc_received = agent.tc_bad_packets = agent.internal_errors = 0
        agent._reported_drops = 0  # noqa: SLF001 - the agent's own bookkeeping
        agent.emit("COUNTERS_RESET")

    def conditions() -> Conditions:
        st = agent.controller.status
        p = agent.params
        return Conditions(st.eps.get("soc_pct"), p["battery_floor_pct"], st.temp_max_c,
                          p["thermal_soft_limit_c"], p["thermal_hard_limit_c"])

    def guard_mode(req: CommandRequest) -> None:
        refusal = commanded_refusal(agent.mode, Mode(req.args["mode"]), conditions())
        if refusal:
            raise CommandFailed(refusal, FailureCode.NOT_ALLOWED_IN_MODE)

    def set_mode(req: CommandRequest) -> dict[str, Any]:
        old = agent.mode
        agent.set_mode(Mode(req.args["mode"]), "commanded")
        agent.controller.tick()  # apply the new mode's power plan now, not at the next tick
        return {"old": old.value, "new": agent.mode.value}

    def get_param(req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        param = agent.dictionary.parameter_by_name[name]
        return {"name": name, "value": agent.params[name], "default": param.default, "unit": param.spec.unit,
                "saved": agent.params.saved.get(name)}

    def set_param(req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        try:
            old, new = agent.params.set(name, req.args["value"])
        except ArgumentError as exc:
            raise CommandFailed(str(exc), exc.code) from None
        if name.startswith("thermal_"):
            p = agent.params
            if not p["thermal_soft_limit_c"] < p["thermal_hard_limit_c"]:
                agent.params.set(name, old)
                raise CommandFailed("the soft thermal limit must stay below the hard one", FailureCode.OUT_OF_RANGE)
            agent.controller.limits_changed()
        if name == "hk_period_s":
            agent.timers.set_period("housekeeping", new)
        agent.emit("PARAM_CHANGED", name=name, value=new, old=old)
        return {"name": name, "old": old, "value": new}

    def save_params(req: CommandRequest) -> dict[str, Any]:
        try:
            count = agent.params.save()
        except OSError as exc:
            raise CommandFailed(f"could not write {agent.params.path}: {exc}") from None
        agent.emit("PARAMS_SAVED", count=count, path=str(agent.params.path))
        return {"count": count, "path": str(agent.params.path)}

    def set_power_mode(req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        if name.upper() == "AUTO":
            name = "AUTO"
        else:
            try:
                agent.hal.power_mode(name)
            except HalError as exc:
                raise CommandFailed(str(exc), FailureCode.OUT_OF_RANGE) from None
        old = agent.power_mode_cap
        agent.power_mode_cap = name
        agent.controller.tick()
        mode = agent.hal.current_power_mode()
        return {"cap": name, "old_cap": old, "power_mode": mode.name if mode else None}

    def set_tle(req: CommandRequest) -> dict[str, Any]:
        try:
            orbit = Orbit.from_tle(req.args["line1"], req.args["line2"])
        except TleError as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        agent.state.tle = [req.args["line1"], req.args["line2"]]
        agent.controller.set_orbit(orbit)
        agent.emit("ORBIT_UPDATED", satnum=orbit.satnum, epoch=round(orbit.epoch_unix_s, 3))
        period = orbit.period_s
        return {"satnum": orbit.satnum, "period_s": round(period, 3) if math.isfinite(period) else None}

    def new_job(kind: str, name: str, **fields: Any) -> dict[str, Any]:
        if not agent.compute.enabled:
            raise CommandFailed("compute is off on this agent (lockstep HIL models it, or [compute] enabled = false)",
                                FailureCode.NOT_ALLOWED_IN_MODE)
        job_id = agent.state.next_job_id
        job = {"job_id": job_id, "kind": kind, "name": name, **fields}
        if not agent.compute.submit(job):
            raise CommandFailed(f"{MAX_PENDING} job messages already wait for the compute worker; try again",
                                FailureCode.BUSY)
        agent.state.next_job_id += 1
        agent._save_state(force=True)  # noqa: SLF001 - a job id is never handed out twice
        return {"job_id": job_id, "kind": kind, "runs_when": "mode COMPUTE and admitted by the power manager"}

    def infer_start(req: CommandRequest) -> dict[str, Any]:
        a = req.args
        return new_job("INFERENCE", a["input_set"], model=a["model"], priority=a["priority"], continuous=a["continuous"])

    def train_start(req: CommandRequest) -> dict[str, Any]:
        a = req.args
        return new_job("TRAINING", a["dataset"], steps=a["steps"], batch_size=a["batch_size"],
                       checkpoint_every=a["checkpoint_every"], lr=a["lr"], priority=9)

    def model_install(req: CommandRequest) -> dict[str, Any]:
        a = req.args
        if not agent.compute.enabled:
            raise CommandFailed("compute is off on this agent", FailureCode.NOT_ALLOWED_IN_MODE)
        if len(a["sha256"]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in a["sha256"]):
            raise CommandFailed("sha256 must be 64 hex digits", FailureCode.BAD_ARGUMENTS)
        if not a["name"].replace("_", "").replace("-", "").isalnum():
            raise CommandFailed("model names are letters, digits, - and _", FailureCode.BAD_ARGUMENTS)
        if not agent.compute.install_model(a["name"], a["version"], a["sha256"], a["golden"]):
            raise CommandFailed(f"{MAX_PENDING} messages already wait for the compute worker", FailureCode.BUSY)
        return {"name": a["name"], "checked_by": "the compute worker: MODEL_INSTALLED or MODEL_REFUSED follows"}

    def job_cancel(req: CommandRequest) -> dict[str, Any]:
        if not agent.compute.cancel(req.args["job_id"]):
            raise CommandFailed(f"{MAX_PENDING} job messages already wait for the compute worker", FailureCode.BUSY)
        return {"job_id": req.args["job_id"]}

    def shutdown(req: CommandRequest) -> dict[str, Any]:
        agent.stop(f"commanded: {req.args['reason']}")
        return {"stopping": True}

    d.register("NOOP", lambda req: None)
    d.register("PING", ping)
    d.register("RESET_COUNTERS", reset_counters)
    d.register("SET_MODE", set_mode, guard_mode)
    d.register("GET_PARAM", get_param)
    d.register("SET_PARAM", set_param)
    d.register("SAVE_PARAMS", save_params)
    d.register("SET_POWER_MODE", set_power_mode)
    d.register("SET_TLE", set_tle)
    d.register("INFER_START", infer_start)
    d.register("TRAIN_START", train_start)
    d.register("MODEL_INSTALL", model_install)
    d.register("JOB_CANCEL", job_cancel)
    d.register("SHUTDOWN", shutdown)
    missing = d.missing_handlers()
    assert not missing, f"dictionary commands without a handler: {missing}"
