"""Built-in sinks. Each module is a plugin of its own (entry points `console`, `jsonl`,
`webhook` of group `eventbus`) and registers through `eventbus_register_sinks`, exactly as a
third-party sink would.
"""

from eventbus_core.sinks.console import ConsoleSink
from eventbus_core.sinks.jsonl import JsonlSink
from eventbus_core.sinks.webhook import WebhookSink

__all__ = ["ConsoleSink", "JsonlSink", "WebhookSink"]
