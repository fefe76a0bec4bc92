"""Valid arguments for every dictionary command, for tests that send each one for real."""

import hashlib
import time
from pathlib import Path

from flight.compute.usecase.shipped import MODEL_FILE, MODELS_DIR
from flight.link.definitions import DICTIONARY
from flight.orbit import tle_checksum

# A model package "uplinked" to the board's staging/ directory, for MODEL_INSTALL: the shipped
# model as cloud_screen version 2, signed by a test operator whose key the agent trusts (start it
# with sample_agent_args()); the shipped version 1.0 becomes its fallback, which MODEL_ROLLBACK
# restores. stage_sample_model() puts it there.
SAMPLE_MODEL = "cloud_screen"
SAMPLE_MODEL_SHA256 = hashlib.sha256((MODELS_DIR / MODEL_FILE).read_bytes()).hexdigest()
SAMPLE_OPERATOR = "test-operator"
SAMPLE_OPERATOR_SEED = bytes(range(32))  # a fixed key for tests: never an operator's


def sample_agent_args(directory: Path, tc_keys: bool = False) -> list[str]:
    """Flags for an agent that trusts the sample operator's key ([models] trusted_keys); with
    ``tc_keys``, one that also authenticates telecommands with the sample key slots (seal with
    ``make_client(url, tc_keys=sample_tc_keys(directory))``)."""
    from ground.model_package import key_from_seed, public_line

    keys = Path(directory) / "operators.keys"
    keys.write_text(public_line(SAMPLE_OPERATOR, key_from_seed(SAMPLE_OPERATOR_SEED)) + "\n")
    config = Path(directory) / "agent-models.toml"
    text = f'[models]\ntrusted_keys = "{keys}"\n'
    if tc_keys:
        text += f'[security]\ntc_keys = "{sample_tc_keys(directory)}"\n'
    config.write_text(text)
    return ["--config", str(config)]


# Telecommand key slots for tests (fixed keys: never a board's): SPI 1 active, SPI 100 the master
# key under which KEY_LOAD's sample key (SPI 2) is wrapped.
SAMPLE_TC_KEY = bytes(range(100, 132))
SAMPLE_MASTER_KEY = bytes(range(200, 232))
SAMPLE_LOADED_KEY = bytes(range(50, 82))


def sample_tc_keys(directory: Path) -> Path:
    """The sample key file in ``directory`` (mode 600), written once."""
    from flight.link.sdls import KeyRing, KeySlot

    path = Path(directory) / "tc.keys"
    if not path.exists():
        KeyRing({1: KeySlot(1, SAMPLE_TC_KEY), 100: KeySlot(100, SAMPLE_MASTER_KEY, "master")}).save(path)
    return path


def _sample_wrapped() -> str:
    from flight.link.sdls import wrap_key

    return wrap_key(SAMPLE_MASTER_KEY, SAMPLE_LOADED_KEY).hex()


def pack_sample_model(staging: Path, version: str = "2") -> None:
    """The sample model's signed package (model, reference set, manifest) into ``staging``."""
    from ground.model_package import key_from_seed, load_inputs, pack_full

    pack_full((MODELS_DIR / MODEL_FILE).read_bytes(), SAMPLE_MODEL, version, SAMPLE_OPERATOR,
              key_from_seed(SAMPLE_OPERATOR_SEED), staging, load_inputs(None))


SAMPLE_SEQUENCE = "sample"
SAMPLE_PRODUCT = "products/sample.json"        # FILE_DOWNLINK queues it (FILE_CANCEL then stops it)
SAMPLE_DELETE = "products/sample-delete.json"  # FILE_DELETE removes it
SAMPLE_SEQUENCE_TEXT = """name = "sample"
[[step]]
command = "NOOP"
[[step]]
wait_s = 3600
"""


def stage_sample_model(state_dir: Path) -> None:
    """What a file uplink would have done before MODEL_INSTALL (the agent's default compute dir),
    and before SEQUENCE_START (a sequence that waits an hour after its NOOP: SEQUENCE_ABORT stops it)."""
    staging = Path(state_dir) / "compute" / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    pack_sample_model(staging)
    products = Path(state_dir) / "compute" / "products"
    products.mkdir(parents=True, exist_ok=True)
    for name in (SAMPLE_PRODUCT, SAMPLE_DELETE):
        (products / name.split("/")[-1]).write_text('{"sample": true}\n')
    sequences = Path(state_dir) / "sequences"
    sequences.mkdir(parents=True, exist_ok=True)
    (sequences / f"{SAMPLE_SEQUENCE}.toml").write_text(SAMPLE_SEQUENCE_TEXT)


def tle_with_epoch(lines: tuple[str, str], epoch_unix_s: float) -> tuple[str, str]:
    """``lines`` with their epoch moved to ``epoch_unix_s`` (line 1's checksum made again): a sample
    orbit the agent takes as current whatever day the tests run (a TLE over 14 days old predicts no
    radiation environment: flight.orbit.tle_current)."""
    t = time.gmtime(epoch_unix_s)
    day = t.tm_yday + (epoch_unix_s % 86400.0) / 86400.0
    line1 = f"{lines[0][:18]}{t.tm_year % 100:02d}{day:012.8f}{lines[0][32:68]}"
    return f"{line1}{tle_checksum(line1)}", lines[1]


# An ISS-like element set with a November 2026 epoch (checksums computed), two days before the
# simulated boot of tests/inproc.py (T0_S). An agent on the wall clock takes iss_tle_now().
ISS_TLE = (
    "1 25544U 98067A   26320.50000000  .00016717  00000-0  10270-3 0  9005",
    "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.49815307432102",
)


def iss_tle_now() -> tuple[str, str]:
    """ISS_TLE with its epoch a day before now: current for an agent on the wall clock, any day."""
    return tle_with_epoch(ISS_TLE, time.time() - 86400.0)

VALID_ARGS = {
    "NOOP": {},
    "PING": {"token": 7},
    "RESET_COUNTERS": {},
    "COMMAND_STATUS": {"cmd_id": 12345},  # not received: said so, completed
    "SET_MODE": {"mode": "IDLE"},
    "GET_PARAM": {"name": "hk_period_s"},
    "SET_PARAM": {"name": "hk_period_s", "value": "0.5"},
    "SAVE_PARAMS": {},
    "SET_POWER_MODE": {"name": "AUTO"},
    "SET_TLE": {"line1": ISS_TLE[0], "line2": ISS_TLE[1]},
    "INFER_START": {"input_set": "cloud_tiles_test"},
    "TRAIN_START": {"dataset": "cloud_tiles_test", "steps": 10},
    "JOB_CANCEL": {"job_id": 2},  # the TRAIN_START before it: waiting (the agent is not in COMPUTE)
    "MODEL_INSTALL": {"name": SAMPLE_MODEL, "version": "2", "sha256": SAMPLE_MODEL_SHA256},
    "MODEL_ROLLBACK": {"name": SAMPLE_MODEL},  # back to the shipped 1.0, MODEL_INSTALL's fallback
    "STORE_ENABLE": {"store": "ALL"},
    "STORE_DISABLE": {"store": "HK"},
    "STORE_DUMP": {"from_unix_s": 0.0, "to_unix_s": 1.0},  # 1970: nothing stored then, done at once
    "STORE_DELETE": {"to_unix_s": 1.0},
    "SCHEDULE_AT": {"release_unix_s": time.time() + 7200.0, "command": "NOOP"},
    "SCHEDULE_AFTER": {"delay_s": 3600.0, "command": "PING", "args": '{"token": 5}'},
    "SCHEDULE_DELETE": {"entry_id": 1},  # SCHEDULE_AT's, in a fresh agent
    "SCHEDULE_RESET": {},
    "SCHEDULE_LIST": {},
    "SCHEDULE_RELEASE": {"entry_id": 0},
    "SEQUENCE_START": {"name": SAMPLE_SEQUENCE},
    "SEQUENCE_ABORT": {},  # the sample sequence waits an hour
    "FILE_DOWNLINK": {"name": SAMPLE_PRODUCT},
    "FILE_CANCEL": {"transfer": "out-1"},  # the FILE_DOWNLINK before it
    "FILE_LIST": {"directory": "products"},
    "FILE_DELETE": {"name": SAMPLE_DELETE},
    "FILE_STATUS": {},
    "KEY_LOAD": {"spi": 2, "master": 100, "wrapped": _sample_wrapped()},  # needs sample_agent_args(tc_keys=True)
    "KEY_REVOKE": {"spi": 2},  # the one just loaded (the client seals with SPI 1)
    "KEY_LIST": {},
    "SHUTDOWN": {"reason": "test", "then": "STAY_DOWN"},  # exit status 0 (RESTART_SAFE: 75)
}
assert set(VALID_ARGS) == set(DICTIONARY.command_by_name), "add the new command to tests/samples.py"

# Commands in an order an agent completes them all in: SHUTDOWN last.
ORDERED = [c.name for c in DICTIONARY.commands if c.name != "SHUTDOWN"] + ["SHUTDOWN"]
