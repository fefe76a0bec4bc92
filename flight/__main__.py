"""``python -m flight``: sunlit-flight, its modules loaded under the Ctrl-C guard (flight/entry.py)."""

import sys

from flight.entry import sunlit_flight

sys.exit(sunlit_flight())
