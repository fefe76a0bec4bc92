"""Audit of the agent's wiring, control loop and self-test: each test reproduces a finding, then pins its fix."""

from __future__ import annotations

import pytest

from tests.inproc import InProcessAgent
from tests.test_auth_agent import forged, keyed_rig


@pytest.mark.req("LNK-007", "AGT-013")
def test_a_clean_stop_says_the_malformed_packets_of_its_last_partial_period(tmp_path):
    """Found in audit: past the first 4 of a period, malformed packets are said at the period's end; a stop before
    that end never said them, and the count of them is not kept across the restart."""
    rig = InProcessAgent(tmp_path / "state")
    try:
        rig.hk()
        for _ in range(10):
            rig.link.ground.send(b"\x00" * 7)
        rig.pump()
        assert rig.agent.link_service.tc_bad_packets == 10
        rig.agent.stop("test")
        rig.agent.finish()
        rig.pump()
        reasons = [e.args["reason"] for e in rig.events("BAD_PACKET")]
        assert len(reasons) == 5 and reasons[-1].startswith("6 more malformed packets refused, last: ")
        names = [r.event.name for r in rig.client.events]
        assert names.index("AGENT_STOPPING") > max(i for i, n in enumerate(names) if n == "BAD_PACKET")
    finally:
        rig.close()


@pytest.mark.req("SEC-001")
def test_a_clean_stop_says_the_telecommands_refused_in_its_last_partial_period(tmp_path):
    """Found in audit: refused telecommands are said once a housekeeping period (TC_AUTH_REJECTED); those refused
    after the last period before a clean stop were never said."""
    rig = keyed_rig(tmp_path)
    try:
        rig.hk()
        for i in range(5):
            rig.link.ground.send(forged("SET_PARAM", {"name": "hk_period_s", "value": "5"}, 900 + i))
        rig.pump()
        assert rig.agent.link_service.tc_auth_rejected == 5
        rig.agent.stop("test")
        rig.agent.finish()
        rig.pump()
        assert [e.args["count"] for e in rig.events("TC_AUTH_REJECTED")] == [5]
        assert rig.events("AGENT_STOPPING")
    finally:
        rig.close()


@pytest.mark.req("AGT-020", "AGT-060")
def test_a_step_of_utc_predicts_the_orbit_again_at_once_not_a_minute_later(tmp_path):
    """Found in audit: the eclipse and SAA prediction is in UTC, its refresh on the monotonic clock; after UTC stepped
    a day back (NTP, GNSS, a time set) the plan took the next eclipse, 25 min away, for one 25 h away until the next
    period. A step is a new prediction, as for the passes (flight/agent/contacts.py)."""
    from tests.samples import ISS_TLE

    with InProcessAgent(tmp_path / "state", tle=ISS_TLE) as rig:
        utc, offset_s = rig.clock.now_s, [0.0]
        rig.clock.now_s = lambda: utc() + offset_s[0]  # UTC steps, monotonic time does not
        rig.hk()
        controller = rig.agent.controller
        period_s = controller.orbit.period_s
        for step_s in (-86400.0 - 1234.0, 3 * 3600.0 + 777.0):  # back a day, then forward 3 h: still 21 h behind
            offset_s[0] += step_s
            rig.advance(1.0)
            assert abs(controller.prediction.time_unix_s - rig.clock.now_s()) <= 1.0, step_s
            assert rig.hk()["eclipse_in_s"] <= period_s, step_s  # the ISS sees an eclipse every orbit


@pytest.mark.req("DEP-003")
def test_the_selftest_warns_of_a_plain_zeromq_link_other_hosts_may_reach(tmp_path):
    """Found in audit: with zmq_curve = "off" on 0.0.0.0 the agent warns on its console at start, but the selftest
    passed the link without a word. A warning row, not a failure (a bench may want it); none on loopback."""
    from flight.config import parse_config
    from flight.selftest import Status, run_selftest
    from hil.agent_process import free_tcp_port_pair

    port = free_tcp_port_pair()
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        config = parse_config({"link": {"url": f"zmq://{host}:{port}"}, "hal": {"backend": "linux"},
                               "paths": {"state_dir": str(tmp_path)}, "security": {"zmq_curve": "off"}}, "t.toml")
        report = run_selftest(config, check_link=False)
        rows = [r for r in report.rows if r.name == "zmq curve"]
        assert [r.status for r in rows] == ([Status.WARN] if warned else []), host
        if warned:
            assert "zmq_curve" in rows[0].detail and "tc_keys" in rows[0].detail
            assert "zmq curve" in report.table() and report.to_json()["counts"]["WARN"] >= 1
