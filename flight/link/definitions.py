"""Every command, telemetry point, housekeeping packet, event, parameter and enumeration.

This file is the single source of truth: the agent dispatches from it, the ground checks
arguments and colours limits from it, ``docs/dictionary.md`` is generated from it and its
hash is what both sides compare. Add an entry here, never a literal elsewhere: the
enumerations below are the ones the code imports (``Mode.SAFE``, ``Admission.ALL``), so a
renamed value breaks at import, not on the wire.
"""

import enum

from flight.link.apid import Apid
from flight.link.dictionary import (
    Argument,
    Channel,
    Command,
    Dictionary,
    Event,
    FromParam,
    HkPacket,
    Limits,
    Parameter,
    Severity,
    ValueSpec,
    ValueType as T,
    choices_of,
)


# --- enumerations -----------------------------------------------------------------------------


class Mode(str, enum.Enum):
    """The agent's mode (flight/agent/modes.py has the rules for moving between them)."""

    BOOT = "BOOT"
    SAFE = "SAFE"
    IDLE = "IDLE"
    COMPUTE = "COMPUTE"


MODES_COMMANDABLE = (Mode.SAFE, Mode.IDLE, Mode.COMPUTE)


class Admission(str, enum.Enum):
    """What compute work may run; inference is always admitted before training."""

    NONE = "NONE"
    INFERENCE = "INFERENCE"
    ALL = "ALL"


class ThermalState(str, enum.Enum):
    NOMINAL = "NOMINAL"
    THROTTLED = "THROTTLED"
    HARD_LIMIT = "HARD_LIMIT"


class ComputeState(str, enum.Enum):
    """The compute worker as the agent sees it."""

    OFF = "OFF"            # not configured, or lockstep HIL where compute is modelled
    STARTING = "STARTING"  # started, has not said hello yet
    RUNNING = "RUNNING"
    DOWN = "DOWN"          # killed after a hang or crash, being restarted


class JobKind(str, enum.Enum):
    NONE = "NONE"  # no job (the job_kind channel when nothing runs)
    INFERENCE = "INFERENCE"
    TRAINING = "TRAINING"


class FluxClass(str, enum.Enum):
    """The radiation environment as the agent predicts it from its own orbit (flight/compute/scrub.py:
    :func:`~flight.compute.scrub.flux_class`): inside the SAA model, at high latitude, elsewhere, or not known
    (no orbit). What the weight scrubbing period and the double runs of results follow."""

    UNKNOWN = "UNKNOWN"  # no TLE: no prediction
    QUIET = "QUIET"
    HIGH_LATITUDE = "HIGH_LATITUDE"
    SAA = "SAA"


class Protection(str, enum.Enum):
    """How a model's results are protected (flight/compute/checks.py): weights the worker scrubs in the
    memory ONNX Runtime computes from, a checksum pass (ABFT) that flags each sample, range checks on
    its activations (flight/compute/ranges.py), any of them together, or none. Named in that order
    (abft, ranges, scrubbed) joined by "+"; new values go last."""

    NONE = "none"
    SCRUBBED = "scrubbed"
    ABFT = "abft"
    ABFT_SCRUBBED = "abft+scrubbed"
    RANGES = "ranges"
    RANGES_SCRUBBED = "ranges+scrubbed"
    ABFT_RANGES = "abft+ranges"
    ABFT_RANGES_SCRUBBED = "abft+ranges+scrubbed"


class LinkKind(str, enum.Enum):
    ZMQ = "ZMQ"
    SERIAL = "SERIAL"
    MEMORY = "MEMORY"  # in-process, for tests and tools (flight/link/memory_link.py)


class StoreName(str, enum.Enum):
    """The on-board packet store's priority classes (flight/agent/tm_store.py), and ALL of them."""

    ALL = "ALL"
    REPORTS = "REPORTS"  # verification reports and events: played back first, dropped last
    OTHER = "OTHER"      # parameter reports, plans, the rest
    HK = "HK"            # housekeeping: played back last, dropped first


class EpsSource(str, enum.Enum):
    """Where battery and solar readings come from."""

    SIM = "SIM"        # the HIL harness (simulated)
    BENCH = "BENCH"    # none: a bench supply, declared in the configuration
    NONE = "NONE"      # none, and nothing declared: the power manager cannot plan

PARAMETERS = (
    Parameter("hk_period_s", 0x0001, ValueSpec(T.F64, "s", 0.1, 3600.0), 1.0,
              "Period of the housekeeping packets"),
    Parameter("battery_floor_pct", 0x0010, ValueSpec(T.F64, "%", 5.0, 95.0), 30.0,
              "State of charge the agent's own load must never take the battery below"),
    Parameter("battery_safe_pct", 0x0011, ValueSpec(T.F64, "%", 1.0, 90.0), 20.0,
              "Below this state of charge the agent goes SAFE whatever it was doing"),
    Parameter("battery_margin_pct", 0x0012, ValueSpec(T.F64, "%", 0.0, 30.0), 5.0,
              "Planning margin kept above the floor"),
    Parameter("training_reserve_pct", 0x0013, ValueSpec(T.F64, "%", 0.0, 60.0), 15.0,
              "Training is admitted only with this much charge above floor and margin (inference goes first)"),
    Parameter("load_margin_pct", 0x0014, ValueSpec(T.F64, "%", 0.0, 300.0), 70.0,
              "The plan allows for the rest of the spacecraft drawing this much more than the agent has "
              "measured (a heater or a transmitter nobody announced): in the reserve for the orbit after its "
              "horizon, and on a day that load would make power-scarce, by holding the charge it has (one "
              "orbit ahead, up to a day's reserve) rather than spending it; it never idles to build that "
              "reserve. 70 % kept the floor in every case of bench.power (loads that step up by 1-4 W "
              "unannounced)"),
    Parameter("thermal_soft_limit_c", 0x0020, ValueSpec(T.F64, "degC", 30.0, 110.0), 85.0,
              "At or above this (or heading there within the lookahead) the power mode steps down one level"),
    Parameter("thermal_hard_limit_c", 0x0021, ValueSpec(T.F64, "degC", 40.0, 120.0), 95.0,
              "At or above this compute stops and the agent goes SAFE"),
    Parameter("thermal_hysteresis_c", 0x0022, ValueSpec(T.F64, "degC", 0.5, 30.0), 5.0,
              "How far below the soft limit before stepping back up"),
    Parameter("thermal_min_dwell_s", 0x0023, ValueSpec(T.F64, "s", 0.0, 3600.0), 30.0,
              "Least time between two power-mode steps, so the board does not oscillate"),
    Parameter("thermal_lookahead_s", 0x0024, ValueSpec(T.F64, "s", 0.0, 1800.0), 60.0,
              "How far ahead the rate of rise is projected"),
    Parameter("contact_timeout_s", 0x0030, ValueSpec(T.F64, "s", 60.0, 30 * 86400.0), 86400.0,
              "With no valid command for this long the agent goes SAFE (lost ground contact)"),
    Parameter("fault_limit", 0x0031, ValueSpec(T.U32, "count", 1, 1000), 5,
              "Faults within fault_window_s that send the agent SAFE"),
    Parameter("fault_window_s", 0x0032, ValueSpec(T.F64, "s", 1.0, 86400.0), 600.0,
              "Window over which faults are counted"),
    Parameter("sensor_restore_s", 0x0033, ValueSpec(T.F64, "s", 0.0, 3600.0), 60.0,
              "A sensor reported missing is said restored once it has read this long without a dropout"),
    Parameter("compute_watchdog_s", 0x0040, ValueSpec(T.F64, "s", 2.0, 600.0), 10.0,
              "A compute worker silent this long is taken as hung and restarted"),
    # Results and weights under radiation (flight/compute/checks.py, flight/compute/scrub.py).
    Parameter("double_run_fraction", 0x0041, ValueSpec(T.F64, "", 0.0, 1.0), 0.02,
              "Share of the inference batches run twice and compared (bit for bit on the CPU, within a "
              "tolerance on a GPU); a mismatch scrubs the weights and runs the batch again. 0.02 (one batch in "
              "50) costs 2 % of the throughput and samples the transient upsets a weight scrub cannot see. A double "
              "run repeats a weight's fault: with abft_checks off, every weight is checked against its CRC "
              "(weights_scrub) before tiles a double run passed are released, a pass over the model's bytes"),
    Parameter("double_run_all_in_saa", 0x0042, ValueSpec(T.BOOL), False,
              "Run every inference batch twice while the agent predicts it is inside the South Atlantic "
              "Anomaly (where most upsets happen): half the throughput there, ~6-8 % over an orbit; and while "
              "it predicts nothing (no TLE, or one over 14 days old): half the throughput until one comes"),
    Parameter("weights_scrub", 0x0043, ValueSpec(T.BOOL), True,
              "Run models on weights the compute worker owns and checks against three golden copies (a full "
              "pass every 30 s in the SAA, 300 s at high latitude, 1500 s elsewhere, at least once per orbit); "
              "ONNX Runtime then computes from those buffers (no weight pre-packing, graph optimisation "
              "'extended'). Covers the CPU provider only; off: the sessions as ONNX Runtime builds them. Cost, "
              "measured on a PC core: none on the shipped model (1.29x ONNX Runtime's default session), "
              "but ~40 % of the throughput of models dominated by large MatMul/Gemm layers (a 4x1024x1024 MLP "
              "ran at 0.58x: their kernels are fast only on pre-packed weights): turn it off for those"),
    Parameter("abft_checks", 0x0044, ValueSpec(T.BOOL), True,
              "Run models with the checksum pass (flight/compute/abft.py): each Conv, Gemm and MatMul checked, "
              "one abft_ok flag per tile; a batch with a failed flag is run again after a scrub of the weights, "
              "and tiles failing again are marked failed in the product. Made once per model version "
              "from the store's checked bytes, its check weights scrubbed with the model's; the products keep "
              "the uplinked model's SHA-256. A model the pass refuses runs unchecked (MODEL_UNCHECKED says "
              "why). Off: the model as uplinked, results checked only by double runs (with weights_scrub, every weight "
              "checked against its CRC before tiles they passed are released: a double run repeats a weight's "
              "fault; without it, the ground does not vouch for such tiles). Cost: what the checks "
              "read and the copies of its inputs it recomputes (bench.compute: infer_ratio_checked against "
              "infer_ratio; 0.64 against 0.96 on a shared 2-core PC, one thread, checksum pass version 6)"),
    Parameter("range_checks", 0x0045, ValueSpec(T.BOOL), False,
              "Also check each tile's activations against ranges learned from the model's reference inputs "
              "(flight/compute/ranges.py, after Ranger): every tensor the checksum pass does not check (the "
              "normalised input, Relu and Sigmoid outputs, pooled features, the probabilities) must stay within "
              "its reference minimum and maximum, widened by their difference on each side; one range_ok flag "
              "per tile, a failed one handled as a failed checksum flag. Learned once per model version; a "
              "version with no reference inputs kept runs without them. Off by default: it costs passes over "
              "each ranged tensor (bench.radiation range_overhead: about +1 over the bare shipped model with both "
              "checks, against about +0.4 for the checksum pass alone, one thread of a shared PC) and flags inputs "
              "unlike the reference data (tiles of random reflectance; 23 of 100 000 procedural tiles, none of "
              "the held-out ones), but catches flips in high exponent bits of the activations the checksum "
              "pass cannot see (range_detect_rate_activations 0.45 against 0.28 without; every flip that "
              "changed a class). Alone (abft_checks off) they miss a weight's fault that stays in range: every "
              "weight is then checked against its CRC (weights_scrub) before tiles they passed are released"),
    Parameter("compute_open_s", 0x0046, ValueSpec(T.F64, "s", 10.0, 7200.0), 1800.0,
              "The longest the compute worker waits for a model's session to open (on a Jetson, TensorRT builds its "
              "engine then: minutes for a large model) while it answers the watchdog; past it, the worker exits "
              "and is restarted. After two attempts in a row to open one model version on one provider that never "
              "returned (this limit, a crash, a power cut), that provider is skipped for that version and the next "
              "tried (TensorRT, CUDA, then the CPU; past the CPU those bytes are not opened: a model protected by "
              "the checksum pass then runs as uplinked, MODEL_UNCHECKED, and where those never open either its "
              "jobs fail). Requests that come during an open past 10 s are answered BUSY at once"),
    Parameter("saa_drift_west_deg_per_yr", 0x0047, ValueSpec(T.F64, "deg/yr", 0.0, 1.0), 0.30,
              "The agent's estimate of how fast the South Atlantic Anomaly drifts west (positive: west), from "
              "where its SAA model (fitted to AP8, which places it in the 1960 field) has it: every prediction "
              "of the SAA (passes, SAA_PREDICTED, in_saa, the worker's flux class, scrub period and checkpoint "
              "before entry) moves the model by this rate times the years since 1960 (0.1 deg/yr is 6.7 deg by "
              "2027). 0.30 is RXTE's 1996-2007 mean; Insight-HXMT measured 0.343 over 2017-2024. Set it from "
              "where upsets are seen, or from a newer model's map; a change predicts the SAA again at once"),
    Parameter("saa_drift_north_deg_per_yr", 0x0048, ValueSpec(T.F64, "deg/yr", -0.2, 0.2), 0.0,
              "The same estimate northward (positive: north; Insight-HXMT measured 0.028 deg/yr over 2017-2024, "
              "RXTE reported none)"),
    # Autonomous recovery from SAFE (flight/agent/modes.py). The defaults are for a spacecraft the
    # ground hears a few times a day: waiting for a pass to leave SAFE after a reset or a brownout
    # can cost most of an orbit's work, so the agent returns on its own, but only to the mode it was
    # in, only after the cause has stayed away a while, and only a few times before a person looks.
    Parameter("recovery_enabled", 0x0050, ValueSpec(T.BOOL), True,
              "Return from SAFE on its own to the mode it was in, after a reset, a low battery or the hard "
              "thermal limit, once the cause has cleared (never after a commanded SAFE, repeated faults or "
              "lost contact: those wait for the ground)"),
    Parameter("recovery_clear_s", 0x0051, ValueSpec(T.F64, "s", 0.0, 86400.0), 600.0,
              "How long every cause must stay clear before returning: ten minutes, long enough that a "
              "battery or a board hovering at its limit does not bounce in and out of SAFE, and short "
              "against a 95-minute orbit"),
    Parameter("recovery_max", 0x0052, ValueSpec(T.U32, "count", 0, 100), 3,
              "At most this many automatic returns within recovery_window_s; past it the agent stays SAFE "
              "(RECOVERY_HELD) until a command or the window frees one. 3 rides out a bad day of upsets; "
              "a fault that keeps coming back waits for a person"),
    Parameter("recovery_window_s", 0x0053, ValueSpec(T.F64, "s", 60.0, 30 * 86400.0), 86400.0,
              "Window over which automatic returns are counted (kept across restarts): a day, so a ground "
              "station that sees the spacecraft a few times a day sees every recovery before the budget renews"),
)
PARAMETERS += (
    # The packet store and its playback (flight/agent/downlink.py).
    Parameter("playback_rate_bps", 0x0060, ValueSpec(T.F64, "B/s", 100.0, 1e8), 1e6,
              "Most bytes per second the playback of stored packets may put on the link, beside live telemetry "
              "(a serial line is also held to what it drains: playback never queues more than a quarter second "
              "of the line ahead of live data)"),
    Parameter("playback_resend_s", 0x0061, ValueSpec(T.F64, "s", 1.0, 86400.0), 30.0,
              "A packet sent (live or played back) that the ground has not acknowledged after this long is "
              "played back again"),
    Parameter("ground_window_s", 0x0062, ValueSpec(T.F64, "s", 1.0, 3600.0), 10.0,
              "The ground counts as listening (and stored packets are played back) for this long after its last "
              "store acknowledgement"),
    Parameter("hk_live_every", 0x0063, ValueSpec(T.U32, "count", 1, 3600), 1,
              "Housekeeping goes to the store at full rate and live at one packet in this many (per packet "
              "kind); the rest comes down in playback, after everything else"),
    Parameter("playback_grace_s", 0x0064, ValueSpec(T.F64, "s", 1.0, 3600.0), 3.0,
              "After the ground's first store acknowledgement following a silence, what went out during the "
              "silence is played back only if not acknowledged this long after it (what was still on its way "
              "is acknowledged first); above the time between the ground's acknowledgements"),
)
PARAMETERS += (
    # File transfer (CFDP, flight/agent/files.py).
    Parameter("file_rate_bps", 0x0070, ValueSpec(T.F64, "B/s", 100.0, 1e8), 1e6,
              "Most bytes per second of CFDP PDUs on the link beside telemetry (a serial line is also held to what "
              "it drains: files never queue more than a quarter second of the line ahead of live data)"),
    Parameter("file_los_s", 0x0071, ValueSpec(T.F64, "s", 2.0, 3600.0), 30.0,
              "No valid packet from the ground for this long is loss of signal: every file transaction is suspended "
              "(its timers stop) until the ground is heard again"),
    Parameter("file_keep_done_s", 0x0072, ValueSpec(T.F64, "s", 0.0, 365 * 86400.0), 86400.0,
              "A product or a processed input whose downlink the ground has confirmed (CFDP class 2, Finished) "
              "is deleted this long after (products/, incoming/done/); an input made on board, this long after a "
              "job took it"),
    Parameter("file_auto_downlink", 0x0074, ValueSpec(T.BOOL), False,
              "Queue each new file in products/ (priority 2), checkpoints/ (6) and logs/ (8) for downlink by "
              "itself; off: only FILE_DOWNLINK sends"),
    Parameter("disk_reserve_mb", 0x0073, ValueSpec(T.F64, "MB", 0.0, 1e6), 200.0,
              "Free space the agent keeps: below it new jobs and new incoming files are refused with the reason"),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)

# Rules between parameters (a value alone passes its own range): (lower, upper, why), ``lower`` must stay
# below ``upper``. Checked on every SET_PARAM, on the config's [parameters] and on the values saved.
ORDERED_PARAMETERS = (
    ("thermal_soft_limit_c", "thermal_hard_limit_c", "the soft thermal limit must stay below the hard one"),
    # A SAFE charge at or above the floor: the plan spends down to floor and margin, into SAFE, and back
    # (found in an audit: IDLE, SAFE, recovered, SAFE, until recovery was held)
    ("battery_safe_pct", "battery_floor_pct", "the SAFE charge (battery_safe_pct) must stay below the floor the "
     "plan keeps (battery_floor_pct)"),
)

SCHEDULE_MAX_AHEAD_S = 30 * 86400.0
"""How far ahead a time tag may be (SCHEDULE_AT, SCHEDULE_AFTER): further than the TLE and the plans are trusted
is a typing error. The agent refuses past it, and the ground's schedule file is checked against it first."""

COMMANDS = (
    Command("NOOP", 0x0001, "Do nothing but count; proves the command path end to end.", read_only=True),
    Command(
        "PING",
        0x0002,
        "Ask the agent to answer; the completion report echoes the token with the agent's uptime and dictionary hash.",
        (Argument("token", ValueSpec(T.U32), "Any number; returned unchanged", default=0),),
        read_only=True,
    ),
    Command("RESET_COUNTERS", 0x0003, "Zero the command, error and link counters in housekeeping (and the count of "
                                      "saved parameters refused at boot)."),
    Command(
        "COMMAND_STATUS",
        0x0004,
        "Say what became of a command, by its cmd_id, running nothing: completed, failed, interrupted (cut off "
        "by a reset), running, or not_received (not among the last 4096 commands the agent keeps; a read-only "
        "one, not journaled, only among the last 1024 and until a restart); the completion report carries "
        "state, code and reason.",
        (Argument("cmd_id", ValueSpec(T.U64), "The command's cmd_id, as the ground drew it"),),
        read_only=True,
    ),
    Command(
        "SET_MODE",
        0x0010,
        "Change the agent's mode. SAFE → IDLE → COMPUTE, one step at a time; refused with the reason when a guard fails.",
        (Argument("mode", ValueSpec(T.ENUM, choices=choices_of(MODES_COMMANDABLE)), "Target mode"),),
        hazardous=True,
        idempotent=True,
    ),
    Command(
        "GET_PARAM",
        0x0020,
        "Read a parameter; the completion report carries its value, default and whether it is saved.",
        (Argument("name", ValueSpec(T.ENUM, choices=PARAMETER_NAMES), "Parameter name"),),
        read_only=True,
    ),
    Command(
        "SET_PARAM",
        0x0021,
        "Set a parameter now (checked against its type and range); SAVE_PARAMS keeps it across restarts.",
        (
            Argument("name", ValueSpec(T.ENUM, choices=PARAMETER_NAMES), "Parameter name"),
            Argument("value", ValueSpec(T.STRING, max_len=64), "New value, as text; converted to the parameter's type"),
        ),
        hazardous=True,
        idempotent=True,
    ),
    Command("SAVE_PARAMS", 0x0022, "Write every parameter to the agent's state directory (atomic, checksummed)."),
    Command(
        "SET_POWER_MODE",
        0x0030,
        "Cap the board's power mode by name (e.g. 15W, MAXN); the agent may still run lower for power or heat. "
        "AUTO removes the cap.",
        (Argument("name", ValueSpec(T.STRING, max_len=32), "Power mode name from the board, or AUTO"),),
        idempotent=True,
    ),
    Command(
        "SET_TLE",
        0x0031,
        "Replace the orbit the agent predicts eclipses and SAA passes from; kept across restarts.",
        (
            Argument("line1", ValueSpec(T.STRING, max_len=69), "TLE line 1"),
            Argument("line2", ValueSpec(T.STRING, max_len=69), "TLE line 2"),
        ),
        hazardous=True,
        idempotent=True,
    ),
    Command(
        "INFER_START",
        0x0040,
        "Queue an inference job on a named input set (or, continuous, on every tile file arriving in incoming/); "
        "results are summarised in COMPUTE_HK and kept in products/ for downlink.",
        (
            Argument("input_set", ValueSpec(T.STRING, max_len=64), "Input set name (an .npz in the compute data directory)"),
            Argument("model", ValueSpec(T.STRING, max_len=64), "Model name in the store", default="cloud_screen"),
            Argument("priority", ValueSpec(T.U8, "", 0, 9), "0 runs first", default=5),
            Argument("continuous", ValueSpec(T.BOOL), "Keep running on incoming data", default=False),
        ),
    ),
    Command(
        "TRAIN_START",
        0x0041,
        "Queue an on-board training job (an MLP trained by ONNX Runtime step graphs) on a named data set; "
        "checkpointed, paused and resumed by the power manager, never loses more than checkpoint_every steps.",
        (
            Argument("dataset", ValueSpec(T.STRING, max_len=64), "Data set name: data/NAME.npz with x and y, or a "
                     "tile set as the use case ships it (tiles_dn, labels)"),
            Argument("steps", ValueSpec(T.U32, "count", 1, 10_000_000), "Training steps to run"),
            Argument("batch_size", ValueSpec(T.U16, "count", 1, 4096), "Samples per step", default=64),
            Argument("checkpoint_every", ValueSpec(T.U32, "count", 1, 1_000_000), "Steps between checkpoints",
                     default=50),
            Argument("lr", ValueSpec(T.F64, "", 1e-6, 1.0), "Adam learning rate", default=0.001),
            Argument("classes", ValueSpec(T.U16, "count", 0, 1024), "Classes the model outputs: a sample labelled "
                     "outside 0 to classes-1 is refused as a bad one, never a wider model; 0: the data set's largest "
                     "label plus one (at most 1024), as the board read it at the job's start", default=0),
        ),
    ),
    Command(
        "MODEL_INSTALL",
        0x0043,
        "Install a model package uplinked to the compute staging/ directory (NAME.onnx or NAME.delta.npz, "
        "NAME.ref.npz, NAME.manifest.json signed by a trusted operator key): verify the signature and every "
        "SHA-256, build the model from a delta on its base, run it over its reference set within the signed "
        "tolerance, then make it active, the version it replaces kept as the fallback. Completes when the new "
        "version is active; fails with what failed otherwise. golden=true also replaces the protected golden copy.",
        (
            Argument("name", ValueSpec(T.STRING, max_len=64), "Model name in the store (and staging/NAME.*)"),
            Argument("version", ValueSpec(T.STRING, max_len=32), "Version recorded in the store (as signed)"),
            Argument("sha256", ValueSpec(T.STRING, max_len=64),
                     "SHA-256 of the model, hex, as signed (for a delta: of the model it builds)"),
            Argument("golden", ValueSpec(T.BOOL), "Also replace the golden copy", default=False),
        ),
        hazardous=True,
    ),
    Command(
        "MODEL_ROLLBACK",
        0x0044,
        "Make a model's fallback version active again (the active one becomes the fallback, and the restored one "
        "is on probation until it has run a job); fails when there is no fallback.",
        (Argument("name", ValueSpec(T.STRING, max_len=64), "Model name in the store"),),
        hazardous=True,
    ),
    Command(
        "JOB_CANCEL",
        0x0042,
        "Cancel a compute job.",
        (Argument("job_id", ValueSpec(T.U32, "", 1, 2**32 - 1), "Job id from INFER_START or TRAIN_START"),),
        idempotent=True,
    ),
    Command(
        "STORE_ENABLE",
        0x0050,
        "Start keeping packets of a store class (or ALL) in the on-board packet store; kept across restarts.",
        (Argument("store", ValueSpec(T.ENUM, choices=choices_of(StoreName)), "Store class, or ALL"),),
        idempotent=True,
    ),
    Command(
        "STORE_DISABLE",
        0x0051,
        "Stop keeping packets of a store class (or ALL): they then go out live only, and are lost if the ground "
        "does not hear them. Kept across restarts.",
        (Argument("store", ValueSpec(T.ENUM, choices=choices_of(StoreName)), "Store class, or ALL"),),
        hazardous=True,
        idempotent=True,
    ),
    Command(
        "STORE_DUMP",
        0x0052,
        "Play back every stored packet with a time in [from_unix_s, to_unix_s], acknowledged or not, ahead of the "
        "routine playback; completes when every one of them has been handed to the link (the result counts those "
        "gone meanwhile and those the disk could not read); fails if the disk refuses its reads for a minute.",
        (
            Argument("from_unix_s", ValueSpec(T.F64, "s", 0.0, 1e10), "Start of the range (packet time, UTC)"),
            Argument("to_unix_s", ValueSpec(T.F64, "s", 0.0, 1e10), "End of the range (packet time, UTC)"),
            Argument("store", ValueSpec(T.ENUM, choices=choices_of(StoreName)), "Store class, or ALL",
                     default="ALL"),
        ),
    ),
    Command(
        "STORE_DELETE",
        0x0053,
        "Delete the stored packets with a time up to to_unix_s (the ground will not get those it has not "
        "acknowledged); the completion report counts them.",
        (
            Argument("to_unix_s", ValueSpec(T.F64, "s", 0.0, 1e10), "Delete packets up to this time (UTC)"),
            Argument("store", ValueSpec(T.ENUM, choices=choices_of(StoreName)), "Store class, or ALL",
                     default="ALL"),
        ),
        hazardous=True,
        idempotent=True,
    ),
    Command(
        "SCHEDULE_AT",
        0x0060,
        "Time-tag a command: run it at release_unix_s (UTC) with every verification report, tagged by "
        "SCHEDULE_RELEASED; refused now if in the past, over 30 days ahead, the schedule is full or the command "
        "or its arguments are bad. Kept across restarts (docs/sequences.md).",
        (
            Argument("release_unix_s", ValueSpec(T.F64, "s", 0.0, 1e10), "Release time, UTC"),
            Argument("command", ValueSpec(T.STRING, max_len=32), "Dictionary command to run"),
            Argument("args", ValueSpec(T.STRING, max_len=400), "Its arguments as a JSON object", default="{}"),
        ),
        hazardous=True,
    ),
    Command(
        "SCHEDULE_AFTER",
        0x0061,
        "Time-tag a command delay_s from now (on-board UTC); otherwise as SCHEDULE_AT.",
        (
            Argument("delay_s", ValueSpec(T.F64, "s", 0.0, 30 * 86400.0), "Delay from now"),
            Argument("command", ValueSpec(T.STRING, max_len=32), "Dictionary command to run"),
            Argument("args", ValueSpec(T.STRING, max_len=400), "Its arguments as a JSON object", default="{}"),
        ),
        hazardous=True,
    ),
    Command("SCHEDULE_DELETE", 0x0062, "Delete one entry of the schedule (held or not).",
            (Argument("entry_id", ValueSpec(T.U32, "", 1, 2**32 - 1), "Entry id from SCHEDULE_AT or SCHEDULE_LIST"),),
            idempotent=True),
    Command("SCHEDULE_RESET", 0x0063, "Delete every entry of the schedule; ids go on counting.", hazardous=True),
    Command("SCHEDULE_LIST", 0x0064, "Report the schedule: the count, and the first 40 entries (id, release time, "
            "command, held) in the completion report.", read_only=True),
    Command("SCHEDULE_RELEASE", 0x0065, "Release entries held after a clock jump or a restart (0: all of them): "
            "those whose time has passed run at once.",
            (Argument("entry_id", ValueSpec(T.U32, "", 0, 2**32 - 1), "Entry id, or 0 for every held entry",
                      default=0),),
            hazardous=True),
    Command(
        "SEQUENCE_START",
        0x0066,
        "Run the stored sequence STATE_DIR/sequences/NAME.toml (docs/sequences.md), one at a time; each step's "
        "command goes with its verification reports; SEQUENCE_DONE says how it ended. Resumed after a restart.",
        (Argument("name", ValueSpec(T.STRING, max_len=32), "Sequence name (the file without .toml)"),),
        hazardous=True,
    ),
    Command("SEQUENCE_ABORT", 0x0067, "Stop the running sequence; a command it already sent is not recalled.",
            idempotent=True),
    Command(
        "FILE_DOWNLINK",
        0x0070,
        "Queue a file under the agent's file area for downlink by CFDP (class 2: acknowledged, the ground "
        "confirms; class 1: sent once); completed when queued, with the transfer id; FILE_SENT or FILE_FAILED "
        "says how it ended.",
        (
            Argument("name", ValueSpec(T.STRING, max_len=200), "File name, e.g. products/job-3.json"),
            Argument("cfdp_class", ValueSpec(T.U8, "", 1, 2), "CFDP class: 2 acknowledged, 1 unacknowledged",
                     default=2),
            Argument("priority", ValueSpec(T.U8, "", 0, 255), "Queue priority, 0 first", default=5),
        ),
    ),
    Command("FILE_CANCEL", 0x0071, "Cancel a file transfer, going out or coming in (the peer is told).",
            (Argument("transfer", ValueSpec(T.STRING, max_len=40), "Transfer id (FILE_STATUS, FILE_STARTED)"),),
            idempotent=True),
    Command("FILE_LIST", 0x0072, "List a directory of the agent's file area (PUS 23 style): names, sizes and times "
            "of the first 100 entries, and the free space.",
            (Argument("directory", ValueSpec(T.STRING, max_len=200), "Directory, e.g. products"),), read_only=True),
    Command("FILE_DELETE", 0x0073, "Delete one file of the agent's file area (never a model in the store, never a "
            "file being transferred, never one a compute job still to run needs: its checkpoint, its data set).",
            (Argument("name", ValueSpec(T.STRING, max_len=200), "File name, e.g. products/job-3.npz"),),
            hazardous=True, idempotent=True),
    Command("FILE_STATUS", 0x0074, "Report the file transfers in progress and queued, and the last ones finished "
            "(id, direction, name, bytes, state).", read_only=True),
    Command("KEY_LOAD", 0x00E0, "Load a new telecommand key into a free slot: the key comes wrapped under a master "
            "key (AES key wrap, RFC 3394; `sunlit-ground key new` makes it) and is kept, still wrapped, in the state "
            "directory. Commands sealed with it are taken from the next one on. (Master and telemetry keys change "
            "only in the provisioned key file.)",
            (Argument("spi", ValueSpec(T.U16, "", 1, 65535), "The new slot (security parameter index)"),
             Argument("master", ValueSpec(T.U16, "", 1, 65535), "The master key's slot it is wrapped under"),
             Argument("wrapped", ValueSpec(T.STRING, max_len=2 * 40), "The wrapped key, 80 hex digits")),
            hazardous=True),
    Command("KEY_REVOKE", 0x00E1, "Revoke an active telecommand key slot: commands sealed with it are refused from "
            "now on, after a restart too. The last active slot cannot be revoked; a revoked one is left as it is.",
            (Argument("spi", ValueSpec(T.U16, "", 1, 65535), "The slot to revoke"),), hazardous=True,
            idempotent=True),
    Command("KEY_LIST", 0x00E2, "Report the key slots: SPI, state (active, revoked, master, telemetry) and a "
            "fingerprint (the first 8 hex digits of the key's SHA-256; never the key), and whether the changes made "
            "by command were lost to a damaged state file.", read_only=True),
    Command(
        "SHUTDOWN",
        0x00F0,
        "Stop the agent cleanly (state saved). RESTART_SAFE: the agent exits with status 75 and its service starts "
        "it again, in SAFE; STAY_DOWN: it exits with status 0 and stays down until the board's next boot "
        "(deploy/README.md, \"The services\").",
        (Argument("reason", ValueSpec(T.STRING, max_len=64), "Why, for the log", default="commanded"),
         Argument("then", ValueSpec(T.ENUM, choices=("RESTART_SAFE", "STAY_DOWN")), "What happens next",
                  default="RESTART_SAFE")),
        hazardous=True,
    ),
)

_LINK_CHANNELS = (
    Channel("tc_received", T.U32, "count", "Telecommand packets received (valid or not)"),
    Channel("tc_bad_packets", T.U32, "count", "Received packets refused as malformed (length, CRC, header, "
            "service, APID; a sealed one's frame before its seal is judged), and frames the link refused before a "
            "packet was made of them (serial framing; a ZeroMQ message of other than two frames); a TC(8,1) whose "
            "data does not decode is a rejected command (cmd_rejected, COMMAND_REJECTED)",
            Limits(warn_high=1)),
    Channel("tc_duplicates", T.U32, "count", "Retried telecommands answered from the cache, not executed again"),
    Channel("tm_sent", T.U32, "count", "Telemetry packets handed to the link since this start or the last "
            "RESET_COUNTERS (not kept across restarts, unlike tm_dropped)"),
    Channel("tm_dropped", T.U32, "count", "Telemetry packets dropped because a queue was full, since the last "
            "RESET_COUNTERS, across restarts (TM_DROPPED says each period's, those of the last before a stop at the "
            "first after the start)", Limits(warn_high=1)),
    Channel("link_kind", T.ENUM, "", "Which link carries commands and telemetry", choices=choices_of(LinkKind)),
    Channel("tc_auth", T.STRING, "", "How telecommands are authenticated: HMAC-SHA256 (SDLS-style, key slots "
            "from [security] tc_keys) or OFF (any packet on the link is taken)"),
    Channel("tc_auth_rejected", T.U32, "count", "Telecommands refused by authentication (forged, replayed, stale, "
            "unknown or revoked key; a packet too short, of a wrong length or CRC is tc_bad_packets); never parsed "
            "further", Limits(warn_high=1)),
    Channel("tc_keys_active", T.U16, "count", "Telecommand key slots active (0 with authentication OFF)"),
    Channel("zmq_auth_refused", T.U32, "count", "ZeroMQ connections refused by CURVE authentication (a key not in "
            "[security] zmq_clients, or no CURVE); 0 on a serial link", Limits(warn_high=1)),
    Channel("link_device_errors", T.U32, "count", "Serial link: opens, reads and writes of the device that failed "
            "(an adapter unplugged, EIO); the link tries again each second. 0 on ZeroMQ", Limits(warn_high=1)),
    Channel("link_reopens", T.U32, "count", "Serial link: the device opened again after a loss"),
)

CHANNELS = (
    Channel("mode", T.ENUM, "", "Agent mode", choices=choices_of(Mode)),
    Channel("boot_count", T.U32, "count", "Agent starts since the state directory was created"),
    Channel("uptime_s", T.F64, "s", "Time since the agent started, on the agent's clock"),
    Channel("dict_hash", T.STRING, "", "Version hash of the dictionary the agent was built with"),
    Channel("cmd_accepted", T.U32, "count", "Commands accepted"),
    Channel("cmd_rejected", T.U32, "count", "Commands refused at acceptance (unknown, bad or out-of-range arguments)",
            Limits(warn_high=1)),
    Channel("cmd_executed", T.U32, "count", "Commands completed successfully"),
    Channel("cmd_failed", T.U32, "count", "Commands that failed during execution", Limits(warn_high=1)),
    Channel("internal_errors", T.U32, "count", "Unexpected errors caught by the agent's loop (each is a bug)",
            Limits(warn_high=1)),
    *_LINK_CHANNELS,
    Channel("contact_age_s", T.F64, "s", "Time since the last valid command from the ground",
            Limits(warn_high=FromParam("contact_timeout_s"))),
    Channel("cpu_pct", T.F64, "%", "CPU use of the board", Limits(warn_high=90)),
    Channel("mem_pct", T.F64, "%", "Memory use of the board", Limits(warn_high=85, crit_high=95)),
    Channel("hal_backend", T.STRING, "", "Hardware backend: jetson, linux or sim (sim: every reading is simulated)"),
    Channel("sensors_missing", T.U16, "count", "Sensors the hardware layer could not read", Limits(warn_high=1)),
    Channel("control_late_p99_ms", T.F64, "ms", "How late the control tick fires, 99th percentile of the last 600 ticks",
            Limits(warn_high=50)),
    Channel("params_saved_refused", T.U32, "count", "Saved parameter values this boot left out (out of range, the "
            "wrong type, a parameter this dictionary lacks, a rule between parameters broken): the value under each "
            "is in force; PARAM_SAVED_REFUSED says each; zeroed by RESET_COUNTERS", Limits(warn_high=1)),
    Channel("state_corrupt", T.U32, "count", "Stored files this boot found wrong (unreadable, failing their check, "
            "records of the command journal damaged; the telemetry SNs' also not writable): STATE_CORRUPT says each "
            "and what is in force; zeroed by RESET_COUNTERS", Limits(warn_high=1)),
    Channel("state_write_failures", T.U32, "count", "Writes of the agent's state file (mode, power-mode cap, TLE, "
            "job ids, counters) the disk refused (full, read-only, failing): the agent runs on from memory and "
            "tries again at the next change and each minute; STATE_NOT_WRITTEN says them; zeroed by RESET_COUNTERS",
            Limits(warn_high=1)),
)

_RAILS = ("vdd_in", "vdd_cpu_gpu_cv", "vdd_soc", "vdd_gpu_soc", "vdd_cpu_cv", "vin_sys_5v0", "vddq_vdd2_1v8ao")
_ZONES = ("cpu", "gpu", "soc0", "soc1", "soc2", "tj", "cv0", "cv1", "cv2", "board")
RAIL_CHANNELS = {f"{r.upper()}": f"rail_{r}_w" for r in _RAILS}
ZONE_CHANNELS = {z: f"temp_{z}_c" for z in _ZONES}

POWER_CHANNELS = (
    Channel("battery_soc_pct", T.F64, "%", "Battery state of charge (from the EPS; the harness under HIL)",
            Limits(warn_low=FromParam("battery_floor_pct"), crit_low=FromParam("battery_safe_pct"))),
    Channel("bus_voltage_v", T.F64, "V", "Main bus voltage", Limits(warn_low=6.8, crit_low=6.4)),
    Channel("solar_power_w", T.F64, "W", "Power coming in from the solar arrays"),
    Channel("solar_predicted_w", T.F64, "W",
            "The array model's prediction for now, calibrated (nil without an [array] configuration or an orbit)"),
    Channel("solar_model_scale", T.F64, "",
            "Measured over modelled array power (weighted least squares): the efficiency the configuration got wrong"),
    Channel("solar_error_w", T.F64, "W",
            "RMS of measured minus predicted array power; twice it is taken off the forecast the plan uses"),
    Channel("plan_ms", T.F64, "ms", "How long the last receding-horizon plan took to solve (nil: no plan, the rule runs)",
            Limits(warn_high=100.0)),
    Channel("plan_min_soc_pct", T.F64, "%", "The lowest charge the plan in force predicts over its horizon",
            Limits(warn_low=FromParam("battery_floor_pct"))),
    Channel("plan_held_pct", T.F64, "%", "The charge the plan in force holds one orbit ahead, at the same point "
            "of the orbit, towards the reserve load_margin_pct asks for (nil: no such hold)"),
    Channel("platform_load_est_w", T.F64, "W", "The rest of the spacecraft's draw as the plan takes it: the "
            "configured value, then learnt from the battery's energy balance between changes of its gauge's reading"),
    Channel("battery_capacity_wh", T.F64, "Wh", "The battery's capacity the plan and the load estimate use: its "
            "gauge's full-charge capacity where the EPS gives one (within 0.3 to 1.2 of the configuration's; the "
            "last such is held while it gives none), else the configuration's"),
    Channel("thermal_model_rms_c", T.F64, "degC", "Error of the board temperature model the agent learns "
            "(flight/thermal/model.py): its open-loop miss half an hour ahead (RMS), its one-step error until "
            "that is measured; twice it (at least 1 degC) is the plan's margin below the soft limit. Nil until "
            "the model is trusted and the plan keeps a thermal limit"),
    Channel("plan_temp_max_c", T.F64, "degC", "The hottest the board model predicts under the plan in force (nil: "
            "no trusted model, the governor alone)", Limits(warn_high=FromParam("thermal_soft_limit_c"))),
    Channel("eps_source", T.ENUM, "", "Where battery and solar values come from: SIM (the HIL harness), BENCH (a "
            "bench supply declared in the config: no battery), NONE (no EPS and none declared: compute waits)",
            choices=choices_of(EpsSource)),
    Channel("board_power_w", T.F64, "W", "Board input power (VDD_IN where the board has it)"),
    *(Channel(ch, T.F64, "W", f"{rail} rail power (INA3221)") for rail, ch in RAIL_CHANNELS.items()),
    Channel("power_mode", T.STRING, "", "Power mode in force (nvpmodel name)"),
    Channel("power_mode_cap", T.STRING, "", "Highest power mode the operator allows (AUTO: none)"),
    Channel("power_budget_w", T.F64, "W", "Board power the energy plan allows now"),
    Channel("admission", T.ENUM, "", "Compute work admitted: NONE, INFERENCE, or ALL (training too)",
            choices=choices_of(Admission)),
    Channel("power_reason", T.STRING, "", "Why the power manager chose this mode and admission"),
    Channel("energy_headroom_wh", T.F64, "Wh", "Energy above what the plan keeps at its tightest point"),
    Channel("in_eclipse", T.BOOL, "", "Spacecraft in the Earth's umbra (predicted from the TLE)"),
    Channel("eclipse_in_s", T.F64, "s", "Time to the next eclipse entry (NaN: none within the horizon)"),
    Channel("eclipse_exit_in_s", T.F64, "s", "Time to the exit of the current or next eclipse"),
    Channel("eclipse_duration_s", T.F64, "s", "Duration of the current or next eclipse"),
    Channel("in_saa", T.BOOL, "", "Spacecraft inside the South Atlantic Anomaly (predicted)"),
    Channel("saa_in_s", T.F64, "s", "Time to the next SAA entry"),
    Channel("saa_exit_in_s", T.F64, "s", "Time to the exit of the current or next SAA pass"),
    Channel("beta_deg", T.F64, "deg", "Sun beta angle of the orbit"),
    Channel("tle_age_s", T.F64, "s", "Age of the TLE the prediction uses (below 0: the clock is behind its epoch)",
            Limits(warn_low=-86400, warn_high=7 * 86400)),
)

THERMAL_CHANNELS = (
    *(Channel(ch, T.F64, "degC", f"{zone} thermal zone") for zone, ch in ZONE_CHANNELS.items()),
    Channel("temp_max_c", T.F64, "degC", "Hottest zone",
            Limits(warn_high=FromParam("thermal_soft_limit_c"), crit_high=FromParam("thermal_hard_limit_c"))),
    Channel("temp_rate_c_per_min", T.F64, "degC/min", "Rate of rise of the hottest zone (least squares, last 30 s)"),
    Channel("throttle_state", T.ENUM, "", "Thermal throttling", choices=choices_of(ThermalState)),
    Channel("throttle_steps", T.U8, "count", "Power-mode levels stepped down for heat"),
)

COMPUTE_CHANNELS = (
    Channel("compute_state", T.ENUM, "", "Compute worker: OFF (not configured or lockstep, where compute is modelled), "
            "STARTING, RUNNING, DOWN (restarting)", choices=choices_of(ComputeState)),
    Channel("compute_provider", T.STRING, "", "ONNX Runtime execution provider in use"),
    Channel("compute_pid", T.U32, "", "Process id of the compute worker (0: none)"),
    Channel("compute_restarts", T.U32, "count", "Worker restarts after a hang or crash", Limits(warn_high=1)),
    Channel("compute_threads", T.U8, "count", "Threads the power mode allows the worker"),
    Channel("compute_duty", T.F64, "", "Duty cycle the power mode allows the worker (0..1)"),
    Channel("jobs_queued", T.U16, "count", "Compute jobs waiting or paused"),
    Channel("job_id", T.U32, "", "Job running now (0: none)"),
    Channel("job_kind", T.ENUM, "", "Kind of the job running now", choices=choices_of(JobKind)),
    Channel("infer_count", T.U64, "count", "Tiles classified since the worker started"),
    Channel("infer_rate_per_s", T.F64, "1/s", "Tiles classified per second over the last status period"),
    Channel("infer_cloudy", T.U32, "count", "Tiles classified cloudy (kept off the downlink)"),
    Channel("infer_clear", T.U32, "count", "Tiles classified clear (for downlink)"),
    Channel("infer_confidence_mean", T.F64, "", "Mean confidence of the classifications"),
    Channel("train_step", T.U32, "count", "Step of the training job running now"),
    Channel("train_loss", T.F64, "", "Loss of the last training step"),
    Channel("train_accuracy", T.F64, "", "Training accuracy since the job (re)started"),
    Channel("train_steps_per_s", T.F64, "1/s", "Training steps per second"),
    Channel("train_energy_per_step_j", T.F64, "J", "Board power over step rate (where the rail power is known)"),
    Channel("products", T.U32, "count", "Product files waiting in products/ for downlink"),
    Channel("model_name", T.STRING, "", "The model the worker last activated, rolled back or ran; the model_* "
            "channels are its active version's"),
    Channel("model_version", T.STRING, "", "Active version of model_name"),
    Channel("model_sha256", T.STRING, "", "SHA-256 of the active version (the one MODEL_INSTALL was given)"),
    Channel("model_uplinked_by", T.STRING, "", "Operator whose key signed the active version (shipped: built into "
            "the flight software; unsigned: installed on its SHA-256 alone)"),
    Channel("model_fallback_version", T.STRING, "", "Version MODEL_ROLLBACK would restore (empty: none)"),
    Channel("model_probation", T.BOOL, "", "The active version has not yet run a job; it is rolled back to the "
            "fallback by itself if it fails to load, or its first job fails or gives non-finite outputs"),
    Channel("model_protection", T.ENUM, "", "How the results of model_name's session are protected: weights "
            "scrubbed in the memory ONNX Runtime computes from (CPU provider), a checksum pass (abft), range "
            "checks on its activations (ranges), any of them joined by +, none",
            choices=choices_of(Protection)),
    Channel("flux_class", T.ENUM, "", "The radiation environment the agent predicts from its TLE (SAA model, "
            "latitude): what the scrub period and the double runs follow", choices=choices_of(FluxClass)),
    Channel("scrub_age_s", T.F64, "s", "Time since the weight chunk checked longest ago was checked (none: no "
            "scrubbed session)"),
    Channel("scrub_period_s", T.F64, "s", "Full-pass period of the weight scrub in force (follows flux_class)"),
    Channel("scrub_passes", T.U32, "count", "Full passes over the weights since the worker started"),
    Channel("scrub_chunks", T.U64, "count", "Weight chunks (64 KiB) checked since the worker started"),
    Channel("scrub_repairs", T.U32, "count", "Weight chunks repaired from the golden copies (or reloaded from "
            "the model store) since the worker started", Limits(warn_high=1)),
    Channel("checks_failed", T.U32, "count", "Result checks failed (checksum flag, range check, double-run "
            "mismatch, a run onnxruntime refused, a result changed while held, or one made while a weight no check "
            "covers was wrong), before the scrub and rerun", Limits(warn_high=1)),
    Channel("reruns", T.U32, "count", "Batches run again after a failed check and a scrub"),
    Channel("double_runs", T.U32, "count", "Batches run twice and compared"),
    Channel("results_marked", T.U32, "count", "Batches that failed their check again after the scrub and rerun: "
            "their tiles are marked failed in the product", Limits(warn_high=1)),
    Channel("train_steps_refused", T.U32, "count", "Training steps refused before they were committed: a label "
            "out of range, a loss, gradient or update not finite, a norm above 1e10, or one far above the recent ones "
            "and the largest the job accepted (flight/compute/training/guard.py)"),
    Channel("train_restores", T.U32, "count", "Training jobs sent back to their last checkpoint: refusals "
            "persisted past a retry and a skipped batch, or the state changed in memory between steps",
            Limits(warn_high=1)),
    Channel("train_saa_checkpoints", T.U32, "count", "Checkpoints written because the agent predicted an SAA "
            "entry within 30 s"),
    Channel("train_checkpoints_refused", T.U32, "count", "Training checkpoints not resumed: they failed their "
            "SHA-256, did not fit the trainer, held a value that is not a number, or could not be shown to be the "
            "job's (moved aside until the job ends; the job started from step 0, or failed where it was going back to "
            "one)", Limits(warn_high=1)),
    Channel("infer_files_rejected", T.U32, "count", "Files in incoming/ a continuous job refused (unreadable, "
            "not numbers, the wrong shape for the model, NaN or infinite values): moved to incoming/rejected/",
            Limits(warn_high=1)),
    Channel("compute_writes_failed", T.U32, "count", "Writes of the worker's own state that failed (the job list, a "
            "training checkpoint: a full or failing disk); the last one written stays whole", Limits(warn_high=1)),
    Channel("compute_state_corrupt", T.U32, "count", "State the worker read back that failed its check (its job "
            "list or an entry of it, a model version's reference set, a protected model it keeps): "
            "COMPUTE_STATE_CORRUPT says each", Limits(warn_high=1)),
)

STORE_CHANNELS = (
    Channel("store_records", T.U32, "count", "Stored packets the ground has not acknowledged yet"),
    Channel("store_bytes", T.U64, "B", "Bytes of the packet store's segment files"),
    Channel("store_fill_pct", T.F64, "%", "Packet store use of its configured size; past 100 % the oldest "
            "housekeeping goes first", Limits(warn_high=80, crit_high=95)),
    Channel("store_dropped", T.U32, "count", "Stored packets dropped, never acknowledged, because the store was "
            "full (all classes), since this start", Limits(warn_high=1)),
    Channel("store_dropped_reports", T.U32, "count", "Events and verification reports among store_dropped",
            Limits(warn_high=1)),
    Channel("store_corrupt", T.U32, "count", "Stored records that failed their CRC, or that the disk could not "
            "read (EIO, a filesystem checksum), when read", Limits(warn_high=1)),
    Channel("store_errors", T.U32, "count", "Store operations the disk refused: packets not written (they went out "
            "live only), fsyncs, acknowledgements not kept, playback reads put off", Limits(warn_high=1)),
    Channel("store_acks_ambiguous", T.U32, "count", "Times a ground acknowledgement named a stored packet with "
            "another of its sequence count at another time (two boots, or two turns of the counter): kept, and "
            "played back, until a run names one alone (since start)"),
    Channel("store_enabled", T.STRING, "", "The store classes being kept (REPORTS,OTHER,HK; none: nothing is)"),
    Channel("store_sync_ms", T.F64, "ms", "Time of the last fsyncs of the store's segments, made after each loop turn "
            "that stored a report or event, else every 5 s, in the loop or in a thread of their own ([store] fsync)"),
    Channel("playback_sent", T.U32, "count", "Stored packets played back since the agent started"),
    Channel("playback_rate_bps", T.F64, "B/s", "Bytes of playback per second over the last housekeeping period"),
    Channel("live_deferred", T.U32, "count", "Live packets kept for playback instead of sent: housekeeping "
            "decimated by hk_live_every, or the link's queue full"),
    Channel("ground_ack_age_s", T.F64, "s", "Time since the ground's last store acknowledgement (nil: none since "
            "start); playback runs while it is under ground_window_s"),
)

SCHEDULE_CHANNELS = (
    Channel("schedule_entries", T.U16, "count", "Time-tagged commands waiting in the on-board schedule"),
    Channel("schedule_held", T.U16, "count", "Entries held after a clock jump or a restart (SCHEDULE_RELEASE)",
            Limits(warn_high=1)),
    Channel("schedule_next_in_s", T.F64, "s", "Time to the next release (nil: none)"),
    Channel("schedule_released", T.U32, "count", "Time-tagged commands released since the agent started"),
    Channel("schedule_release_errors", T.U32, "count", "Time-tagged commands that fell due and could not be "
            "released (SCHEDULE_ERROR names each; those due with them still go); zeroed by RESET_COUNTERS",
            Limits(warn_high=1)),
    Channel("schedule_late_ms", T.F64, "ms", "How late the last release was against its time tag",
            Limits(warn_high=50)),
    Channel("clock_jumps", T.U32, "count", "UTC steps against the monotonic clock since the agent started "
            "(CLOCK_JUMPED says each)"),
    Channel("sequence_running", T.STRING, "", "The stored sequence running (empty: none)"),
    Channel("sequence_step", T.U16, "", "Its current step, from 0"),
    Channel("sequences_not_resumed", T.U32, "count", "Sequence runs kept across the last restart and not resumed: "
            "their state damaged, or they failed SEQUENCE_START's checks again (SEQUENCE_DONE or SCHEDULE_ERROR "
            "says why); zeroed by RESET_COUNTERS", Limits(warn_high=1)),
    Channel("next_aos_in_s", T.F64, "s", "Time to the next acquisition of signal over a configured ground station "
            "(0 in a pass; nil: no stations, no orbit, or none within the prediction)"),
    Channel("next_los_in_s", T.F64, "s", "Time to the loss of signal of the current or next pass"),
    Channel("next_pass_station", T.STRING, "", "The station of the current or next pass"),
)

FILE_CHANNELS = (
    Channel("files_in_active", T.U8, "count", "Files coming in (CFDP transactions in progress)"),
    Channel("files_out_active", T.U8, "count", "Files going out now (one at a time)"),
    Channel("files_queued", T.U16, "count", "Files queued for downlink"),
    Channel("files_done", T.U32, "count", "Transfers completed since the agent started (both ways)"),
    Channel("files_failed", T.U32, "count", "Transfers that failed since the agent started, files the "
            "automatic downlink could not send, and files the clean-up could not delete (FILE_FAILED says each)",
            Limits(warn_high=1)),
    Channel("file_bad_pdus", T.U32, "count", "CFDP PDUs refused (malformed, unknown transaction, wrong entity)",
            Limits(warn_high=1)),
    Channel("file_bytes_in", T.U64, "B", "File data bytes received since the agent started"),
    Channel("file_bytes_out", T.U64, "B", "File data bytes sent since the agent started (resends counted)"),
    Channel("files_suspended", T.BOOL, "", "File transactions suspended: the ground has not been heard for "
            "file_los_s"),
    Channel("disk_free_mb", T.F64, "MB", "Free space on the file area's file system", Limits(warn_low=500)),
    Channel("incoming_removed", T.U32, "count", "Files deleted from incoming/ since the agent started that no job "
            "takes (a hidden name, a name not *.npy, or in a directory other than done/ and rejected/), each once "
            "there unchanged for 600 s (FILE_DELETED says each)", Limits(warn_high=1)),
    Channel("inputs_removed", T.U32, "count", "Inputs made on board (not sent up) that a continuous job took, "
            "deleted from incoming/done/ since the agent started: file_keep_done_s after taken, or the oldest past "
            "256 files or 1 GiB of them (FILE_DELETED says each)"),
)

PACKETS = (
    HkPacket(1, "AGENT_HK", Apid.AGENT, tuple(c.name for c in CHANNELS),
             "Agent housekeeping: mode, uptime, command counters, link statistics, board load"),
    HkPacket(2, "POWER_HK", Apid.AGENT, tuple(c.name for c in POWER_CHANNELS),
             "Battery, solar input, rail powers, power mode and the power manager's decision, orbit prediction"),
    HkPacket(3, "THERMAL_HK", Apid.AGENT, tuple(c.name for c in THERMAL_CHANNELS),
             "Temperatures per zone and thermal throttling"),
    HkPacket(4, "COMPUTE_HK", Apid.COMPUTE, tuple(c.name for c in COMPUTE_CHANNELS),
             "Compute worker, jobs, inference results and training progress"),
    HkPacket(5, "STORE_HK", Apid.AGENT, tuple(c.name for c in STORE_CHANNELS),
             "The on-board packet store and its playback"),
    HkPacket(6, "SCHEDULE_HK", Apid.AGENT, tuple(c.name for c in SCHEDULE_CHANNELS),
             "The on-board schedule, the sequence running, and the next ground-station pass"),
    HkPacket(7, "FILE_HK", Apid.AGENT, tuple(c.name for c in FILE_CHANNELS),
             "File transfer (CFDP) and the file area's free space"),
)

EVENTS = (
    Event("AGENT_STARTED", 0x0001, Severity.ACTIVITY_HI,
          "Agent started, boot {boot_count}, previous stop {previous_stop} (dictionary {dict_hash}, link {link}, hal {hal})",
          "The agent finished starting and is answering commands; previous_stop is clean or unclean (a crash or power cut)",
          ("boot_count", "previous_stop", "dict_hash", "link", "hal")),
    Event("AGENT_STOPPING", 0x0002, Severity.ACTIVITY_HI, "Agent stopping: {reason}",
          "The agent is shutting down cleanly", ("reason",)),
    Event("COMMAND_DISPATCHED", 0x0010, Severity.COMMAND, "Command {name} dispatched",
          "A command was accepted and started", ("name",)),
    Event("COMMAND_REJECTED", 0x0011, Severity.WARNING_LO, "Command {name} refused: {reason}",
          "A command was refused at acceptance", ("name", "reason")),
    Event("COMMAND_FAILED", 0x0012, Severity.WARNING_HI, "Command {name} failed: {reason}",
          "A command failed while executing", ("name", "reason")),
    Event("BAD_PACKET", 0x0013, Severity.WARNING_LO, "Malformed packet refused: {reason}",
          "A received packet, or a frame the link refused before a packet was made of it, failed its checks and "
          "was dropped: the first 4 of a housekeeping period one by one, the rest counted in one more at its end",
          ("reason",)),
    Event("INTERNAL_ERROR", 0x0014, Severity.WARNING_HI, "Internal error in {where}: {reason}",
          "The agent caught an unexpected error and carried on; please report it", ("where", "reason")),
    Event("PING_RECEIVED", 0x0020, Severity.ACTIVITY_LO, "Ping {token}", "PING was executed", ("token",)),
    Event("COUNTERS_RESET", 0x0021, Severity.ACTIVITY_HI, "Counters reset", "RESET_COUNTERS was executed"),
    Event("MODE_CHANGED", 0x0040, Severity.ACTIVITY_HI, "Mode {old} → {new}: {reason}",
          "The agent's mode changed, by command or automatically", ("old", "new", "reason")),
    Event("SAFE_ENTERED", 0x0041, Severity.WARNING_HI, "SAFE mode entered automatically: {reason}",
          "A fault, low battery, heat or lost contact sent the agent SAFE", ("reason",)),
    Event("MODE_RECOVERED", 0x0042, Severity.WARNING_LO,
          "Mode {old} → {new} on its own: {reason} (recovery {count} of {limit} in the window)",
          "The agent left SAFE by itself for the mode it was in before, its causes clear for recovery_clear_s "
          "(parameters recovery_*)", ("old", "new", "reason", "count", "limit")),
    Event("RECOVERY_HELD", 0x0043, Severity.WARNING_HI,
          "Staying SAFE: {count} automatic recoveries within {window_s:.0f} s (limit {limit}); {reason}",
          "The causes are clear but the recovery budget is spent; command SET_MODE to leave SAFE "
          "(reported once per SAFE episode)", ("count", "window_s", "limit", "reason")),
    Event("POWER_MODE_CHANGED", 0x0050, Severity.ACTIVITY_HI, "Power mode {old} → {new}: {reason}",
          "The board's power mode was changed", ("old", "new", "reason")),
    Event("POWER_MODE_FAILED", 0x0051, Severity.WARNING_HI, "Could not set power mode {name}: {reason}",
          "The hardware refused or failed a power-mode change", ("name", "reason")),
    Event("POWER_MODES_UNAVAILABLE", 0x0054, Severity.WARNING_HI,
          "Power modes can be neither read nor set: {reason}",
          "The board's power-mode tool cannot run (a Jetson's nvpmodel not there or not executable, or its "
          "nvpmodel.conf missing, unreadable or with no usable mode: the plan then takes the board profile's modes "
          "and none can be set): the board "
          "stays in the mode it is in, which the agent does not know. Said and counted as a fault once an outage, "
          "not at each try (tried again ever more seldom, AGT-008); POWER_MODES_RESTORED once it runs",
          ("reason",)),
    Event("POWER_MODES_RESTORED", 0x0055, Severity.ACTIVITY_HI,
          "The power-mode tool runs again (mode in force: {mode})",
          "After POWER_MODES_UNAVAILABLE, the tool ran: the mode it gave, or ? where it failed as a tool can (said "
          "then as any failure of a query or a set is)", ("mode",)),
    Event("ADMISSION_CHANGED", 0x0052, Severity.ACTIVITY_HI, "Compute admission {old} → {new}: {reason}",
          "The power manager changed what compute work may run", ("old", "new", "reason")),
    Event("LOW_BATTERY", 0x0053, Severity.WARNING_HI, "Battery {soc_pct:.1f} % below {limit_pct:.1f} %",
          "The battery fell below the SAFE threshold", ("soc_pct", "limit_pct")),
    Event("THERMAL_STEP_DOWN", 0x0060, Severity.WARNING_LO, "Thermal step down to {power_mode}: {reason}",
          "Heat made the agent lower the power mode one level", ("power_mode", "reason")),
    Event("THERMAL_STEP_UP", 0x0061, Severity.ACTIVITY_HI, "Thermal step up to {power_mode}: {reason}",
          "The board cooled and the power mode went back up one level", ("power_mode", "reason")),
    Event("THERMAL_HARD_LIMIT", 0x0062, Severity.WARNING_HI, "Hard thermal limit: {reason}; compute stopped",
          "The hard limit was reached: compute stopped, agent SAFE", ("reason",)),
    Event("THERMAL_HARD_CLEAR", 0x0063, Severity.ACTIVITY_HI, "Hard thermal limit cleared: {reason}",
          "The board cooled below the hard limit minus hysteresis", ("reason",)),
    Event("CONTACT_LOST", 0x0070, Severity.WARNING_HI, "No valid command for {age_s:.0f} s (timeout {timeout_s:.0f} s)",
          "Ground contact considered lost", ("age_s", "timeout_s")),
    Event("FAULTS_REPEATED", 0x0071, Severity.WARNING_HI, "{count} faults within {window_s:.0f} s",
          "Repeated faults sent the agent SAFE", ("count", "window_s")),
    Event("SENSOR_MISSING", 0x0072, Severity.WARNING_LO, "Sensor unreadable: {what}",
          "A sensor could not be read; reported once until it is said restored", ("what",)),
    Event("SENSOR_RESTORED", 0x0073, Severity.ACTIVITY_LO,
          "Sensor readable again: {what} ({dropouts} dropouts while reported missing)",
          "A sensor that was missing has read again for sensor_restore_s; dropouts: the times it went missing "
          "again meanwhile", ("what", "dropouts")),
    Event("PARAM_CHANGED", 0x0080, Severity.ACTIVITY_HI, "Parameter {name} = {value} (was {old})",
          "A parameter was set", ("name", "value", "old")),
    Event("PARAMS_SAVED", 0x0081, Severity.ACTIVITY_HI, "{count} parameters saved to {path}",
          "Parameters written to disk", ("count", "path")),
    Event("PARAM_SAVED_REFUSED", 0x0084, Severity.WARNING_HI,
          "Saved parameter {name} = {value} refused ({reason}); in force: {now}",
          "A value saved by SAVE_PARAMS that this boot's dictionary refuses (a range narrowed since, a parameter "
          "renamed or removed, a rule between parameters broken): left out, the config's or the default in force "
          "(none for a parameter that no longer exists); a SAVE_PARAMS drops it from the file",
          ("name", "value", "reason", "now")),
    Event("STATE_CORRUPT", 0x0082, Severity.WARNING_HI, "Stored {what}: {reason}",
          "A stored file found wrong at start: it failed its check or could not be read (most are moved aside, "
          "NAME.corrupt), or, for the telemetry SNs, could not be written; the reason says what is in force "
          "instead", ("what", "reason")),
    Event("STATE_NOT_WRITTEN", 0x0085, Severity.WARNING_HI, "Agent state not written ({count} failed writes): "
          "{reason}", "The agent's state file (mode, power-mode cap, TLE, job ids, counters) could not be written: "
          "the disk is full, read-only or failing. The agent runs on from memory and tries again at the next change "
          "and each minute; a restart before a good write starts from the last one written, and no job is started "
          "(its id could not be kept). Reported at most once per housekeeping period", ("count", "reason")),
    Event("EARLY_EVENTS_DROPPED", 0x0086, Severity.WARNING_LO,
          "{count} events from before time began dropped ({kept} kept)",
          "Events raised before time began (under the harness, before its first step) are held and sent "
          "after AGENT_STARTED; past the number held, the rest are dropped and counted here", ("count", "kept")),
    Event("TEMP_FILES_REMOVED", 0x0083, Severity.WARNING_LO,
          "{count} leftover files of interrupted writes removed from the {where}",
          "Writes cut short by a crash or power cut left temporary files, or, in the model store, a version's "
          "files no manifest names (an install cut short); they were removed at start (the files they were "
          "replacing are intact)", ("count", "where")),
    Event("ORBIT_UPDATED", 0x0090, Severity.ACTIVITY_HI, "Orbit updated: satellite {satnum}, epoch {epoch}",
          "A new TLE is in use", ("satnum", "epoch")),
    Event("ECLIPSE_PREDICTED", 0x0091, Severity.ACTIVITY_LO, "Eclipse in {in_s:.0f} s for {duration_s:.0f} s",
          "The next eclipse as predicted from the TLE (once per eclipse)", ("in_s", "duration_s")),
    Event("ORBIT_UNPREDICTABLE", 0x0094, Severity.WARNING_HI, "Orbit cannot be predicted: {reason}",
          "sgp4 cannot propagate the TLE in use to the clock's time (an epoch far from the clock, a decayed "
          "orbit): no eclipse, SAA or pass prediction until a newer TLE or a corrected clock; said once a TLE",
          ("reason",)),
    Event("SAA_PREDICTED", 0x0092, Severity.ACTIVITY_LO, "SAA entry in {in_s:.0f} s for {duration_s:.0f} s",
          "The next South Atlantic Anomaly pass (once per pass): the hook for checkpointing before it",
          ("in_s", "duration_s")),
    Event("JOB_QUEUED", 0x00A0, Severity.ACTIVITY_LO, "Job {job_id} ({kind}) queued on {name}",
          "The compute worker accepted a job", ("job_id", "kind", "name")),
    Event("JOB_STARTED", 0x00A1, Severity.ACTIVITY_HI, "Job {job_id} ({kind}) started on {name}",
          "A compute job began running", ("job_id", "kind", "name")),
    Event("JOB_WAITING", 0x00A7, Severity.WARNING_LO, "Job {job_id} queued but waits: {reason}",
          "A job was queued while its kind of work is not admitted; the reason says what it waits for and what "
          "to do", ("job_id", "reason")),
    Event("JOB_PAUSED", 0x00A2, Severity.ACTIVITY_HI, "Job {job_id} paused at step {step}: {reason}",
          "A job was paused (checkpointed first) by the power or thermal manager", ("job_id", "step", "reason")),
    Event("JOB_RESUMED", 0x00A3, Severity.ACTIVITY_HI, "Job {job_id} ({kind}) resumed on {name}",
          "A paused or interrupted job runs again from its checkpoint", ("job_id", "kind", "name")),
    Event("JOB_DONE", 0x00A4, Severity.ACTIVITY_HI, "Job {job_id} done: {summary}", "A job finished",
          ("job_id", "summary")),
    Event("JOB_FAILED", 0x00A5, Severity.WARNING_HI, "Job {job_id} failed: {reason}", "A job failed",
          ("job_id", "reason")),
    Event("JOB_CANCELLED", 0x00A6, Severity.ACTIVITY_HI, "Job {job_id} cancelled: {reason}", "A job was cancelled",
          ("job_id", "reason")),
    Event("MODEL_GOLDEN_USED", 0x00A8, Severity.WARNING_HI, "Model {name}: working copy refused ({reason}); golden copy used",
          "The working copy failed its SHA-256 check; the protected golden copy runs instead", ("name", "reason")),
    Event("MODEL_INSTALLED", 0x00AC, Severity.ACTIVITY_HI,
          "Model {name} version {version} active ({sha256}, uplinked by {uplinked_by}; fallback {fallback})",
          "An uplinked model passed its checks (signature, SHA-256, reference set) and is active; the version it "
          "replaced is kept as the fallback", ("name", "version", "sha256", "uplinked_by", "fallback")),
    Event("MODEL_REFERENCE_FAILED", 0x00AE, Severity.WARNING_HI,
          "Model {name} version {version} failed its reference check: {reason}; not activated",
          "Run on board over its reference set, an uplinked model did not give the outputs the ground expects "
          "within the signed tolerance (max_error is the largest difference); the active version stays",
          ("name", "version", "max_error", "tolerance", "reason")),
    Event("MODEL_ROLLED_BACK", 0x00AF, Severity.WARNING_HI,
          "Model {name} rolled back from version {from_version} to {to_version} (automatic {automatic}): {reason}",
          "MODEL_ROLLBACK, or the worker by itself when a newly active version failed to load or its first job "
          "failed or gave non-finite outputs", ("name", "from_version", "to_version", "automatic", "reason")),
    Event("MODEL_REFUSED", 0x00AD, Severity.WARNING_HI, "Model {name} refused: {reason}",
          "An uplinked model failed its check and was not installed", ("name", "reason")),
    Event("PROVIDER_FALLBACK", 0x00A9, Severity.WARNING_LO, "Execution provider fallback, running on {provider}: {reason}",
          "A preferred execution provider could not be used", ("provider", "reason")),
    Event("COMPUTE_HUNG", 0x00AA, Severity.WARNING_HI, "Compute worker silent for {age_s:.1f} s: restarting it",
          "The worker stopped reporting (a hang or crash); it is killed and restarted", ("age_s",)),
    Event("COMPUTE_STARTED", 0x00AB, Severity.ACTIVITY_LO, "Compute worker started (pid {pid})",
          "The compute worker process is up", ("pid",)),
    Event("COMPUTE_CODE_CHANGED", 0x00F7, Severity.WARNING_HI, "Compute worker not started: the software was "
          "updated under the running agent; restart the agent", "A worker started by this agent found its code "
          "(its messages, the dictionary) is not the agent's, as an install or push.sh replaced it, and exited; "
          "none is started again, and compute commands fail saying so, until the agent restarts on the new code "
          "(no fault: nothing hung)", ()),
    Event("WEIGHTS_REPAIRED", 0x00E8, Severity.WARNING_LO,
          "Weights of {name} repaired: tensor {tensor} chunk {chunk}, {bytes} bytes wrong, {golden} golden copies "
          "outvoted ({source})",
          "The weight scrub found a chunk that disagreed with its CRC-32 and put it right from the bitwise vote of "
          "three golden copies (source vote), the one copy still matching (single copy), a recomputed CRC (crc "
          "table), or, when nothing settled it, by dropping the session so that the model is loaded again from "
          "the store at its next use (model store; with no good copy left there, its jobs fail and say so). "
          "Where the weights the session computes from were wrong (bytes > 0, or model store), results since the "
          "chunk's previous check may be wrong: products say how many such repairs they saw. At most 8 per scrub "
          "step: past 7, the rest in one (chunk -1, source more, bytes and golden their totals); scrub_repairs "
          "counts every one",
          ("name", "tensor", "chunk", "bytes", "golden", "source")),
    Event("RESULT_CHECK_FAILED", 0x00E9, Severity.WARNING_HI,
          "Job {job_id}: {check} check failed on {tiles} tiles; {outcome}",
          "A batch failed its checksum flags, its range checks (check \"range\") or its double run; the weights "
          "were scrubbed (where the session's are) "
          "and the batch run again (outcome: passed then, or its tiles marked failed in the product; the outcome "
          "says where no scrub ran). Check \"run refused\": onnxruntime refused the batch (an upset in an integer "
          "weight), which ran after the scrub; \"output CRC\": a result changed while held; \"unchecked weights\": "
          "made while a weight no check covers was wrong (found and repaired before its release); either is made "
          "again. At most one every 10 s, but a rebuild is always said; checks_failed and "
          "results_marked count them all", ("job_id", "check", "tiles", "outcome")),
    Event("TRAIN_STEP_REFUSED", 0x00EB, Severity.WARNING_LO,
          "Job {job_id}: training step {step} refused ({reason}), {in_row} in a row",
          "A training step failed its check before it was committed (a flipped bit in a gradient, a bad sample): "
          "the weights are as before it; the batch is retried, then skipped. At most one every 10 s; "
          "train_steps_refused counts them all", ("job_id", "step", "reason", "in_row")),
    Event("TRAIN_RESTORED", 0x00EC, Severity.WARNING_HI, "Job {job_id} back to its checkpoint at step {step}: {reason}",
          "Refused steps persisted past a retry and a skipped batch, or the trainer's state changed in memory "
          "between steps (one the steps it accepted cannot have made): the job went back to its last checkpoint",
          ("job_id", "step", "reason")),
    Event("TRAIN_SAA_CHECKPOINT", 0x00ED, Severity.ACTIVITY_LO,
          "Job {job_id} checkpointed at step {step}: SAA entry predicted in {entry_in_s:.0f} s",
          "A training job saved a checkpoint before the SAA entry the agent predicts from its own TLE",
          ("job_id", "step", "entry_in_s")),
    Event("TRAIN_CHECKPOINT_REFUSED", 0x00F1, Severity.WARNING_HI,
          "Job {job_id}: checkpoint not resumed ({reason}); {outcome}",
          "A training job's checkpoint failed its SHA-256, did not fit the trainer, held a value that is not a "
          "number, was another job's (a job id "
          "given again after the agent's state was lost) or older than checkpoints that name their job: wrong "
          "weights are worse than lost steps; or the disk could not read it as the job resumed. Moved aside "
          "(NAME.corrupt) until the job ends, where the disk lets it; the job starts from "
          "step 0, or, where it was going back to it (refused steps, a state changed in memory), fails. "
          "train_checkpoints_refused counts them", ("job_id", "reason", "outcome")),
    Event("INCOMING_REJECTED", 0x00F2, Severity.WARNING_LO, "Job {job_id}: input file {name} refused: {reason}",
          "A file in incoming/ that a continuous job cannot screen (unreadable, not numbers, the wrong shape for the "
          "model, NaN or infinite values: bad input, not the model's fault) is moved to incoming/rejected/, which "
          "keeps the newest 16; the job goes on with the next file. infer_files_rejected counts them",
          ("job_id", "name", "reason")),
    Event("COMPUTE_WRITE_FAILED", 0x00F3, Severity.WARNING_HI, "Compute worker could not write {what}: {reason}",
          "A write of the worker's own state failed (a full or failing disk): the job list, a training "
          "checkpoint (periodic, at a pause, before the SAA), the record of its opens (the open goes on, not "
          "written down; the file is removed rather than left saying what no longer holds) or the seal of a "
          "TensorRT engine cache (built again at the next open), a job's product (the job keeps running, its file "
          "left in incoming/ or its results kept, and writes it again every 10 s) or the move of a screened "
          "file to done/ (its product kept, the file left where it was). Other files keep the last state written, "
          "whole, and the worker goes on; a worker lost before the next write loses what was not written. At "
          "most one every "
          "10 s; compute_writes_failed counts them all", ("what", "reason")),
    Event("COMPUTE_STATE_CORRUPT", 0x00F4, Severity.WARNING_HI, "Compute worker found {what} corrupt: {reason}; "
          "{outcome}",
          "State the worker reads back failed its check: its job list (moved aside as NAME.corrupt, the worker "
          "starts with none) or an entry of it (dropped, the list written again), the checkpoints of jobs it no "
          "longer names kept until the next start; the reference set the store keeps with a model version (its "
          "range checks and the probe of its owned weights go without it); or a protected model it keeps in "
          "memory (made again); the record of its opens (opening.json: moved aside, or left in place unread "
          "where it cannot be; every provider tried again); a TensorRT engine cache that differs from its seal "
          "(deleted, the engine built again; not used where it cannot be deleted). At most "
          "one every 10 s for each of them; compute_state_corrupt counts them all",
          ("what", "reason", "outcome")),
    Event("MODEL_OPEN_UNFINISHED", 0x00F6, Severity.WARNING_HI,
          "Opening model {name} on {provider} did not end ({tries} in a row): {outcome}",
          "A session's open (where TensorRT builds its engine) went past compute_open_s, and the worker exits to "
          "be started again; or the worker gave it up on purpose (told to stop, or, opening for a job, nothing "
          "admitted: tries 0, not held against the provider) and exits, as nothing else stops onnxruntime's call; "
          "or the worker found, before it opened the same version again, that an attempt before never returned "
          "(a crash in the provider, a power cut). After two in a row that provider is skipped for that version "
          "(PROVIDER_FALLBACK says so at each open); past the CPU those bytes are not opened (a protected model "
          "then runs as uplinked, MODEL_UNCHECKED; else its jobs fail)",
          ("name", "provider", "tries", "outcome")),
    Event("PRODUCT_MARKED", 0x00F5, Severity.WARNING_HI,
          "Job {job_id}: product {name} written with {failed} of {tiles} tiles failed ({protection}); {unsaid} "
          "more such products since the last said",
          "A continuous job (one product per file in incoming/) wrote a product with tiles whose checks failed "
          "again after a scrub and a rerun, marked failed in it: said as JOB_DONE says a batch job's, so that it "
          "is seen on the ground without fetching it. At most one every 10 s (unsaid: those written meanwhile); "
          "results_marked counts the batches", ("job_id", "name", "failed", "tiles", "protection", "unsaid")),
    Event("MODEL_UNCHECKED", 0x00EA, Severity.WARNING_LO, "Model {name} runs without the checksum pass: {reason}",
          "With abft_checks on, the checksum pass refused this model version (it names the node it cannot check) "
          "or onnxruntime would not open the protected model; it runs as uplinked, its products say unchecked "
          "unless a double run checks them. Said once per version", ("name", "reason")),
    Event("SCRUB_BEHIND", 0x00EF, Severity.WARNING_LO,
          "Weight scrub of {name} behind: its oldest check {age_s} s old, the period {period_s} s ({bytes} bytes)",
          "The scrub could not check every chunk of this model's weights within its period (a model too large for "
          "the scrub's budget per step, or a loop that did not call it often enough), so the weights' guarantee "
          "is older than the flux asks for. Said once each time it falls behind, not while a shorter period (the "
          "SAA) is first being caught up", ("name", "age_s", "period_s", "bytes")),
    Event("MODEL_RANGES_UNCHECKED", 0x00EE, Severity.WARNING_LO, "Model {name} runs without range checks: {reason}",
          "With range_checks on, no ranges could be learned for this model version (no reference inputs kept with "
          "it, or the range pass refused it); its results are checked as the other checks allow. Said when its "
          "session is made", ("name", "reason")),
    Event("STORE_DROPPED", 0x0031, Severity.WARNING_HI,
          "Packet store full: {count} packets the ground never had dropped ({store})",
          "The store went past its size and deleted its oldest segments, lowest class first; reported at most "
          "once per housekeeping period", ("count", "store")),
    Event("STORE_CORRUPT", 0x0032, Severity.WARNING_HI, "Packet store: {count} records failed their CRC ({where})",
          "Stored records were damaged on disk; they are skipped and the rest is kept", ("count", "where")),
    Event("STORE_ERROR", 0x0033, Severity.WARNING_HI, "Packet store cannot write: {reason}",
          "A packet could not be stored (disk full or failing); packets go out live only until it can again "
          "(reported once until a write succeeds, and at most once a minute; store_errors counts each)", ("reason",)),
    Event("STORE_CHANGED", 0x0034, Severity.ACTIVITY_HI, "Packet store classes kept: {enabled}",
          "STORE_ENABLE or STORE_DISABLE changed what is kept", ("enabled",)),
    Event("PLAYBACK_STARTED", 0x0035, Severity.ACTIVITY_LO, "Ground listening: playing back {records} stored packets",
          "The ground's first acknowledgement after a silence; playback of what it has not acknowledged begins",
          ("records",)),
    Event("PLAYBACK_DONE", 0x0036, Severity.ACTIVITY_LO, "Playback caught up: {sent} packets in {duration_s:.0f} s",
          "Every stored packet has been sent at least once since the ground began listening", ("sent", "duration_s")),
    Event("SCHEDULE_RELEASED", 0x00B0, Severity.ACTIVITY_HI,
          "Schedule entry {entry_id}: {command} released as command {cmd_id} ({late_ms:.1f} ms late)",
          "A time-tagged command fell due and was dispatched; its verification reports carry cmd_id",
          ("entry_id", "command", "cmd_id", "late_ms")),
    Event("SCHEDULE_HELD", 0x00B1, Severity.WARNING_HI, "{count} schedule entries held: {reason}",
          "A clock jump or a restart made entries overdue; they wait for SCHEDULE_RELEASE or SCHEDULE_DELETE",
          ("count", "reason")),
    Event("SCHEDULE_ERROR", 0x00B2, Severity.WARNING_HI, "Schedule: {reason}",
          "The schedule or a sequence's state could not be read or kept; what could not is named", ("reason",)),
    Event("CLOCK_JUMPED", 0x00B5, Severity.WARNING_LO,
          "UTC moved {delta_s:+.1f} s against the monotonic clock: {reason}",
          "UTC stepped forward or back by more than the schedule's tolerance between two looks (a time set from "
          "the ground, GPS, NTP, an RTC read at boot); time tags keep their UTC", ("delta_s", "reason")),
    Event("SEQUENCE_STARTED", 0x00B3, Severity.ACTIVITY_HI, "Sequence {name} started ({steps} steps)",
          "SEQUENCE_START began a stored sequence", ("name", "steps")),
    Event("SEQUENCE_RESUMED", 0x00B7, Severity.ACTIVITY_HI, "Sequence {name} resumed at step {step} of {steps}",
          "A stored sequence kept across a restart passed SEQUENCE_START's checks again and goes on from the step "
          "it was in (a command of it cut off by the reset counts as failed, not sent again)",
          ("name", "step", "steps")),
    Event("SEQUENCE_DONE", 0x00B4, Severity.ACTIVITY_HI, "Sequence {name} ended, ok={ok}: {reason}",
          "A stored sequence finished, failed or was aborted", ("name", "ok", "reason")),
    Event("SEQUENCE_STORED", 0x00B6, Severity.ACTIVITY_HI, "Sequence file {name} stored={ok}: {reason}",
          "A sequence file sent up to sequences/ (CFDP), checked as SEQUENCE_START checks it: put in place (ok), or "
          "refused and not put in place, a file of its name there before kept (the step and key named)",
          ("name", "ok", "reason")),
    Event("CONTACT_PREDICTED", 0x0093, Severity.ACTIVITY_LO,
          "Pass over {station} in {aos_in_s:.0f} s for {duration_s:.0f} s (max elevation {max_elevation_deg:.1f} deg)",
          "A ground-station pass predicted from the TLE and the station's elevation mask (once per pass, three hours "
          "ahead): the event log is the pass plan", ("station", "aos_in_s", "duration_s", "max_elevation_deg")),
    Event("FILE_STARTED", 0x00C0, Severity.ACTIVITY_LO, "File transfer {transfer} ({direction}) started: {name}",
          "A CFDP transaction began (or began again after a restart)", ("transfer", "direction", "name")),
    Event("FILE_RECEIVED", 0x00C1, Severity.ACTIVITY_HI, "File {name} received ({bytes} B, sha256 {sha256})",
          "A file came up whole: CRC-32 and the sender's SHA-256 checked, put in place atomically",
          ("transfer", "name", "bytes", "sha256")),
    Event("FILE_SENT", 0x00C2, Severity.ACTIVITY_HI, "File {name} sent ({bytes} B): {reason}",
          "A file went down (class 2: the ground confirmed it whole)", ("transfer", "name", "bytes", "reason")),
    Event("FILE_FAILED", 0x00C3, Severity.WARNING_HI, "File transfer {transfer} ({name}) failed: {reason}",
          "A transfer ended without the file: the reason names the CFDP condition, the name refused or the timeout; "
          "transfer '-': a file the automatic downlink could not send (its name), said once a run, or one the "
          "clean-up could not delete (not deleted: why), said once and tried again",
          ("transfer", "name", "reason")),
    Event("FILE_RESTARTED", 0x00C4, Severity.WARNING_LO, "File transfer {transfer} ({name}) starts again: {reason}",
          "A transfer going out is started again as a new transaction (the peer stopped answering, a reset)",
          ("transfer", "name", "reason")),
    Event("FILES_SUSPENDED", 0x00C5, Severity.ACTIVITY_LO, "File transfers suspended: {reason}",
          "Loss of signal: CFDP timers stop until the ground is heard again", ("reason",)),
    Event("FILES_RESUMED", 0x00C6, Severity.ACTIVITY_LO, "File transfers resumed after {gap_s:.0f} s",
          "The ground is heard again: suspended transactions go on", ("gap_s",)),
    Event("FILE_DELETED", 0x00C7, Severity.ACTIVITY_HI, "File {name} deleted: {reason}",
          "FILE_DELETE, the clean-up of a product the ground has (file_keep_done_s), of a file in incoming/ that "
          "no job takes (incoming_removed), or of an input made on board that a job took (inputs_removed)",
          ("name", "reason")),
    Event("DISK_LOW", 0x00C8, Severity.WARNING_HI, "Disk low: {free_mb:.0f} MB free (reserve {reserve_mb:.0f} MB); "
          "{refused}", "Free space fell under disk_reserve_mb: new work and incoming files are refused",
          ("free_mb", "reserve_mb", "refused")),
    Event("KEY_LOADED", 0x00D1, Severity.ACTIVITY_HI, "Telecommand key SPI {spi} loaded (fingerprint {fingerprint})",
          "A new key slot is active (KEY_LOAD)", ("spi", "fingerprint")),
    Event("KEY_REVOKED", 0x00D2, Severity.WARNING_LO, "Telecommand key SPI {spi} revoked",
          "Commands sealed with this slot are refused from now on (KEY_REVOKE)", ("spi",)),
    Event("TC_AUTH_REJECTED", 0x00D0, Severity.WARNING_HI, "{count} telecommands refused by authentication, "
          "last: {reason}", "Forged, replayed, stale or wrong-key telecommands were dropped before being read "
          "(reported at most once per housekeeping period)", ("count", "kind", "reason")),
    Event("TC_REPLAY_NOT_KEPT", 0x00D3, Severity.WARNING_HI, "Telecommand replay window not written "
          "({count} failed writes): {reason}", "The reservation that keeps captured telecommands from being "
          "taken again after a restart could not be written; commands still run, and the window in memory "
          "still refuses replays, but a restart before the next good write could take one (reported at most "
          "once per housekeeping period)", ("count", "reason")),
    Event("LINK_DEVICE_ERROR", 0x0037, Severity.WARNING_HI, "Link device: {count} failures, last: {reason}",
          "The serial link's device failed to open, read or write (the link tries again each second, its output "
          "queued); said once an outage, until the device is open again (link_device_errors counts every failure, "
          "link_reopens the returns)", ("count", "reason")),
    Event("TM_DROPPED", 0x0030, Severity.WARNING_LO, "{count} telemetry packets dropped (queue full)",
          "The link's outgoing queue refused packets (they are still in the packet store, unless its class is "
          "not kept, and come down in playback); reported at most once per housekeeping period", ("count",)),
)

ENUMERATIONS = (Mode, Admission, ThermalState, ComputeState, JobKind, LinkKind, EpsSource, StoreName,
                FluxClass, Protection)

DICTIONARY = Dictionary(COMMANDS, CHANNELS + POWER_CHANNELS + THERMAL_CHANNELS + COMPUTE_CHANNELS + STORE_CHANNELS
                        + SCHEDULE_CHANNELS + FILE_CHANNELS,
                        PACKETS, EVENTS,
                        PARAMETERS, ENUMERATIONS)
