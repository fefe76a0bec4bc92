"""Every command, telemetry point, housekeeping packet, event and parameter.

This file is the single source of truth: the agent dispatches from it, the ground checks
arguments and colours limits from it, ``docs/dictionary.md`` is generated from it and its
hash is what both sides compare. Add an entry here, never a literal elsewhere.
"""

from flight.link.apid import Apid
from flight.link.dictionary import (
    Argument,
    Channel,
    Command,
    Dictionary,
    Event,
    HkPacket,
    Limits,
    Parameter,
    Severity,
    ValueSpec,
    ValueType as T,
)

MODES = ("BOOT", "SAFE", "IDLE", "COMPUTE")
MODES_COMMANDABLE = ("SAFE", "IDLE", "COMPUTE")

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
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)

COMMANDS = (
    Command("NOOP", 0x0001, "Do nothing but count; proves the command path end to end."),
    Command(
        "PING",
        0x0002,
        "Ask the agent to answer; the completion report echoes the token with the agent's uptime and dictionary hash.",
        (Argument("token", ValueSpec(T.U32), "Any number; returned unchanged", default=0),),
    ),
    Command("RESET_COUNTERS", 0x0003, "Zero the command, error and link counters in housekeeping."),
    Command(
        "SET_MODE",
        0x0010,
        "Change the agent's mode. SAFE → IDLE → COMPUTE, one step at a time; refused with the reason when a guard fails.",
        (Argument("mode", ValueSpec(T.ENUM, choices=MODES_COMMANDABLE), "Target mode"),),
        hazardous=True,
    ),
    Command(
        "GET_PARAM",
        0x0020,
        "Read a parameter; the completion report carries its value, default and whether it is saved.",
        (Argument("name", ValueSpec(T.ENUM, choices=PARAMETER_NAMES), "Parameter name"),),
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
    ),
    Command("SAVE_PARAMS", 0x0022, "Write every parameter to the agent's state directory (atomic, checksummed)."),
    Command(
        "SET_POWER_MODE",
        0x0030,
        "Cap the board's power mode by name (e.g. 15W, MAXN); the agent may still run lower for power or heat. "
        "AUTO removes the cap.",
        (Argument("name", ValueSpec(T.STRING, max_len=32), "Power mode name from the board, or AUTO"),),
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
    ),
    Command(
        "SHUTDOWN",
        0x00F0,
        "Stop the agent cleanly (state saved); under systemd it is restarted only if configured so.",
        (Argument("reason", ValueSpec(T.STRING, max_len=64), "Why, for the log", default="commanded"),),
        hazardous=True,
    ),
)

_LINK_CHANNELS = (
    Channel("tc_received", T.U32, "count", "Telecommand packets received (valid or not)"),
    Channel("tc_bad_packets", T.U32, "count", "Received packets refused as malformed (CRC, header, encoding)",
            Limits(warn_high=1)),
    Channel("tc_duplicates", T.U32, "count", "Retried telecommands answered from the cache, not executed again"),
    Channel("tm_sent", T.U32, "count", "Telemetry packets handed to the link"),
    Channel("tm_dropped", T.U32, "count", "Telemetry packets dropped because a queue was full", Limits(warn_high=1)),
    Channel("link_kind", T.ENUM, "", "Which link carries commands and telemetry", choices=("ZMQ", "SERIAL")),
)

CHANNELS = (
    Channel("mode", T.ENUM, "", "Agent mode", choices=MODES),
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
    Channel("contact_age_s", T.F64, "s", "Time since the last valid command from the ground"),
    Channel("cpu_pct", T.F64, "%", "CPU use of the board", Limits(warn_high=90)),
    Channel("mem_pct", T.F64, "%", "Memory use of the board", Limits(warn_high=85, crit_high=95)),
    Channel("hal_backend", T.STRING, "", "Hardware backend: jetson, linux or sim (sim: every reading is simulated)"),
    Channel("sensors_missing", T.U16, "count", "Sensors the hardware layer could not read", Limits(warn_high=1)),
    Channel("control_late_p99_ms", T.F64, "ms", "How late the control tick fires, 99th percentile of the last 600 ticks",
            Limits(warn_high=50)),
)

_RAILS = ("vdd_in", "vdd_cpu_gpu_cv", "vdd_soc", "vdd_gpu_soc", "vdd_cpu_cv", "vin_sys_5v0", "vddq_vdd2_1v8ao")
_ZONES = ("cpu", "gpu", "soc0", "soc1", "soc2", "tj", "cv0", "cv1", "cv2", "board")
RAIL_CHANNELS = {f"{r.upper()}": f"rail_{r}_w" for r in _RAILS}
ZONE_CHANNELS = {z: f"temp_{z}_c" for z in _ZONES}

POWER_CHANNELS = (
    Channel("battery_soc_pct", T.F64, "%", "Battery state of charge (from the EPS; the harness under HIL)",
            Limits(warn_low=35, crit_low=25)),
    Channel("bus_voltage_v", T.F64, "V", "Main bus voltage", Limits(warn_low=6.8, crit_low=6.4)),
    Channel("solar_power_w", T.F64, "W", "Power coming in from the solar arrays"),
    Channel("eps_source", T.STRING, "", "Where battery and solar values come from: sim, or none on a bench board"),
    Channel("board_power_w", T.F64, "W", "Board input power (VDD_IN where the board has it)"),
    *(Channel(ch, T.F64, "W", f"{rail} rail power (INA3221)") for rail, ch in RAIL_CHANNELS.items()),
    Channel("power_mode", T.STRING, "", "Power mode in force (nvpmodel name)"),
    Channel("power_mode_cap", T.STRING, "", "Highest power mode the operator allows (AUTO: none)"),
    Channel("power_budget_w", T.F64, "W", "Board power the energy plan allows now"),
    Channel("admission", T.ENUM, "", "Compute work admitted: NONE, INFERENCE, or ALL (training too)",
            choices=("NONE", "INFERENCE", "ALL")),
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
    Channel("tle_age_s", T.F64, "s", "Age of the TLE the prediction uses", Limits(warn_high=7 * 86400)),
)

THERMAL_CHANNELS = (
    *(Channel(ch, T.F64, "degC", f"{zone} thermal zone") for zone, ch in ZONE_CHANNELS.items()),
    Channel("temp_max_c", T.F64, "degC", "Hottest zone", Limits(warn_high=85, crit_high=95)),
    Channel("temp_rate_c_per_min", T.F64, "degC/min", "Rate of rise of the hottest zone (least squares, last 30 s)"),
    Channel("throttle_state", T.ENUM, "", "Thermal throttling", choices=("NOMINAL", "THROTTLED", "HARD_LIMIT")),
    Channel("throttle_steps", T.U8, "count", "Power-mode levels stepped down for heat"),
)

PACKETS = (
    HkPacket(1, "AGENT_HK", Apid.AGENT, tuple(c.name for c in CHANNELS),
             "Agent housekeeping: mode, uptime, command counters, link statistics, board load"),
    HkPacket(2, "POWER_HK", Apid.AGENT, tuple(c.name for c in POWER_CHANNELS),
             "Battery, solar input, rail powers, power mode and the power manager's decision, orbit prediction"),
    HkPacket(3, "THERMAL_HK", Apid.AGENT, tuple(c.name for c in THERMAL_CHANNELS),
             "Temperatures per zone and thermal throttling"),
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
          "A received packet failed its checks and was dropped", ("reason",)),
    Event("INTERNAL_ERROR", 0x0014, Severity.WARNING_HI, "Internal error in {where}: {reason}",
          "The agent caught an unexpected error and carried on; please report it", ("where", "reason")),
    Event("PING_RECEIVED", 0x0020, Severity.ACTIVITY_LO, "Ping {token}", "PING was executed", ("token",)),
    Event("COUNTERS_RESET", 0x0021, Severity.ACTIVITY_HI, "Counters reset", "RESET_COUNTERS was executed"),
    Event("MODE_CHANGED", 0x0040, Severity.ACTIVITY_HI, "Mode {old} → {new}: {reason}",
          "The agent's mode changed, by command or automatically", ("old", "new", "reason")),
    Event("SAFE_ENTERED", 0x0041, Severity.WARNING_HI, "SAFE mode entered automatically: {reason}",
          "A fault, low battery, heat or lost contact sent the agent SAFE", ("reason",)),
    Event("POWER_MODE_CHANGED", 0x0050, Severity.ACTIVITY_HI, "Power mode {old} → {new}: {reason}",
          "The board's power mode was changed", ("old", "new", "reason")),
    Event("POWER_MODE_FAILED", 0x0051, Severity.WARNING_HI, "Could not set power mode {name}: {reason}",
          "The hardware refused or failed a power-mode change", ("name", "reason")),
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
          "A sensor could not be read; reported once until it comes back", ("what",)),
    Event("SENSOR_RESTORED", 0x0073, Severity.ACTIVITY_LO, "Sensor readable again: {what}",
          "A sensor that was missing reads again", ("what",)),
    Event("PARAM_CHANGED", 0x0080, Severity.ACTIVITY_HI, "Parameter {name} = {value} (was {old})",
          "A parameter was set", ("name", "value", "old")),
    Event("PARAMS_SAVED", 0x0081, Severity.ACTIVITY_HI, "{count} parameters saved to {path}",
          "Parameters written to disk", ("count", "path")),
    Event("STATE_CORRUPT", 0x0082, Severity.WARNING_HI, "Stored {what} unreadable ({reason}); moved aside, using defaults",
          "A state file failed its checksum", ("what", "reason")),
    Event("ORBIT_UPDATED", 0x0090, Severity.ACTIVITY_HI, "Orbit updated: satellite {satnum}, epoch {epoch}",
          "A new TLE is in use", ("satnum", "epoch")),
    Event("ECLIPSE_PREDICTED", 0x0091, Severity.ACTIVITY_LO, "Eclipse in {in_s:.0f} s for {duration_s:.0f} s",
          "The next eclipse as predicted from the TLE (once per eclipse)", ("in_s", "duration_s")),
    Event("SAA_PREDICTED", 0x0092, Severity.ACTIVITY_LO, "SAA entry in {in_s:.0f} s for {duration_s:.0f} s",
          "The next South Atlantic Anomaly pass (once per pass): the hook for checkpointing before it",
          ("in_s", "duration_s")),
    Event("TM_DROPPED", 0x0030, Severity.WARNING_LO, "{count} telemetry packets dropped (queue full)",
          "The telemetry queue overflowed; reported at most once per housekeeping period", ("count",)),
)

DICTIONARY = Dictionary(COMMANDS, CHANNELS + POWER_CHANNELS + THERMAL_CHANNELS, PACKETS, EVENTS, PARAMETERS)
