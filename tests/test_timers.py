"""The agent's timers (pure, on a clock port): what each callback's lateness counts."""

from __future__ import annotations

import pytest

from flight.agent.timers import Timers


class StepClock:
    """A monotonic clock the callbacks move, as their own work would on a board."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic_s(self) -> float:
        return self.t


@pytest.mark.req("AGT-066")
def test_a_timer_fired_after_another_in_the_same_pass_counts_the_time_that_one_took():
    """Found in audit: the clock was read once a pass, so a control tick fired behind a 20 ms housekeeping call
    counted none of it: bench.agent's jitter said 11 ms for a true 23."""
    clock = StepClock()
    timers = Timers(clock)

    work_s = 2.0 ** -6  # 15.6 ms of housekeeping; periods of binary fractions, so each second both fall due at once

    def housekeeping() -> None:
        clock.t += work_s

    timers.every("housekeeping", 1.0, housekeeping)
    timers.every("control", 0.125, lambda: None)
    for _ in range(40):
        clock.t = max(clock.t, timers.next_due_s())
        timers.run_due()
    late = timers._timers["control"].late_s  # noqa: SLF001 - what late_p99_s reads
    assert sorted(set(late)) == [0.0, work_s] and late.count(work_s) == 5  # each second, behind housekeeping
    assert timers.late_p99_s("control") == work_s
