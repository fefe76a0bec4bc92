"""Valid arguments for every dictionary command, for tests that send each one for real."""

from flight.link.definitions import DICTIONARY

# An ISS-like element set with a November 2026 epoch (checksums computed), so the agent can
# propagate it from today's clock without sgp4 reporting decay.
ISS_TLE = (
    "1 25544U 98067A   26320.50000000  .00016717  00000-0  10270-3 0  9005",
    "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.49815307432102",
)

VALID_ARGS = {
    "NOOP": {},
    "PING": {"token": 7},
    "RESET_COUNTERS": {},
    "SET_MODE": {"mode": "IDLE"},
    "GET_PARAM": {"name": "hk_period_s"},
    "SET_PARAM": {"name": "hk_period_s", "value": "0.5"},
    "SAVE_PARAMS": {},
    "SET_POWER_MODE": {"name": "AUTO"},
    "SET_TLE": {"line1": ISS_TLE[0], "line2": ISS_TLE[1]},
    "INFER_START": {"input_set": "cloud_tiles_test"},
    "TRAIN_START": {"dataset": "cloud_tiles_test", "steps": 10},
    "JOB_CANCEL": {"job_id": 2},
    "MODEL_INSTALL": {"name": "cloud_screen", "version": "2", "sha256": "0" * 64},
    "SHUTDOWN": {"reason": "test"},
}
assert set(VALID_ARGS) == set(DICTIONARY.command_by_name), "add the new command to tests/samples.py"

# Commands in an order an agent completes them all in: SHUTDOWN last.
ORDERED = [c.name for c in DICTIONARY.commands if c.name != "SHUTDOWN"] + ["SHUTDOWN"]
