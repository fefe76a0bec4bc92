"""The web console: ``sunlit-ground serve`` (server.py), its page (static/) and the push-lag bench."""

from ground.web.server import WebConsole, serve

__all__ = ["WebConsole", "serve"]
