"""Application process identifiers: one per packet source on the spacecraft.

Telecommands carry the APID of the application they are for; telemetry the APID of the
application that made it. Each APID has its own 14-bit sequence counter, so the ground
can count gaps per source.
"""

import enum


class Apid(enum.IntEnum):
    AGENT = 0x010    # the flight agent: verification, housekeeping, events
    COMPUTE = 0x011  # on-board inference and training jobs
    HIL = 0x012      # the HIL harness's own reports (never a real spacecraft source)
    PLAYBACK = 0x013 # the agent's packet store playing back stored packets (each inside, with its own APID)
    FILES = 0x014    # CFDP PDUs, both ways: TC(141,1) up, TM(141,1) down (flight/files)
    GROUND = 0x7F0   # packets a ground tool makes for itself (archive notes, replays)
