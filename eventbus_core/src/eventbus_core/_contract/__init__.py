"""The backend contract suite; the public entry point is `eventbus_core.testing`."""
