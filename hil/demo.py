"""``make demo``: start an agent and a console in one command, ping it, show what came back.

The agent runs as its own process on a ZeroMQ link over Unix sockets in a temporary
directory; the console side is the same GroundClient the operators' tools use.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from flight.link.definitions import DICTIONARY
from flight.link.messages import HkRecord
from ground.client import GroundClient
from hil.agent_process import AgentProcess


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sunlit-demo-") as tmp:
        url = f"zmq+ipc://{tmp}/link"
        print(f"Sunlit demo: agent on {url}")
        agent = AgentProcess(url, Path(tmp) / "agent.log", ["--hk-period", "0.5", "--state-dir", f"{tmp}/state"]).start()
        client = GroundClient(url)
        try:
            match = client.dictionary_matches(timeout_s=15.0)
            print(f"dictionary {DICTIONARY.version_hash}: " + {True: "agent agrees", False: "MISMATCH", None: "agent silent"}[match])
            if match is None:
                print(agent.log(), file=sys.stderr)
                return 1
            t0 = time.monotonic()
            result = client.send(
                "PING",
                {"token": 1234},
                on_report=lambda r: print(f"  PING {r.stage.value:<9} +{(time.monotonic() - t0) * 1e3:6.2f} ms"),
            )
            print(f"PING {result.outcome}: {json.dumps(result.result)}")
            hk = client.wait_for(lambda item: isinstance(item.record, HkRecord), timeout_s=5.0)
            print("housekeeping packet:", hk.raw.hex())
            print(json.dumps(client.codec.describe(hk.raw), indent=2))
            return 0 if result.completed else 1
        finally:
            client.close()
            code = agent.stop()
            print(f"agent stopped (exit {code})")


if __name__ == "__main__":
    sys.exit(main())
