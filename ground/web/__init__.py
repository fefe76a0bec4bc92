"""The web console: its page (static/), the fan-out to pages (hub), the push-lag bench; served by ground.server."""
