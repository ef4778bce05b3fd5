"""The campaign dashboard (server-rendered pages under /ui); ``install(app)`` mounts it."""

from api.ui.routes import install

__all__ = ["install"]
