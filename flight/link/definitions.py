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

COMMANDS = (
    Command("NOOP", 0x0001, "Do nothing but count; proves the command path end to end."),
    Command(
        "PING",
        0x0002,
        "Ask the agent to answer; the completion report echoes the token with the agent's uptime and dictionary hash.",
        (Argument("token", ValueSpec(T.U32), "Any number; returned unchanged", default=0),),
    ),
    Command("RESET_COUNTERS", 0x0003, "Zero the command, error and link counters in housekeeping."),
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
)

PACKETS = (
    HkPacket(
        1,
        "AGENT_HK",
        Apid.AGENT,
        tuple(c.name for c in CHANNELS),
        "Agent housekeeping: uptime, command counters and link statistics",
    ),
)

EVENTS = (
    Event("AGENT_STARTED", 0x0001, Severity.ACTIVITY_HI, "Agent started (dictionary {dict_hash}, link {link})",
          "The agent finished starting and is answering commands", ("dict_hash", "link")),
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
    Event("TM_DROPPED", 0x0030, Severity.WARNING_LO, "{count} telemetry packets dropped (queue full)",
          "The telemetry queue overflowed; reported at most once per housekeeping period", ("count",)),
)

PARAMETERS = (
    Parameter("hk_period_s", 0x0001, ValueSpec(T.F64, "s", 0.1, 3600.0), 1.0,
              "Period of the housekeeping packets"),
)

DICTIONARY = Dictionary(COMMANDS, CHANNELS, PACKETS, EVENTS, PARAMETERS)
