"""Built-in sinks. Each module is a plugin of its own (entry points `console`, `jsonl`,
`webhook`, `otlp`, `helicone`, `lunary` of group `eventbus`) and registers through
`eventbus_register_sinks`, exactly as a third-party sink would.
"""

from eventbus_core.sinks.console import ConsoleSink
from eventbus_core.sinks.helicone import HeliconeSink
from eventbus_core.sinks.jsonl import JsonlSink
from eventbus_core.sinks.lunary import LunarySink
from eventbus_core.sinks.otlp import OtlpSink
from eventbus_core.sinks.webhook import WebhookSink

__all__ = ["ConsoleSink", "HeliconeSink", "JsonlSink", "LunarySink", "OtlpSink", "WebhookSink"]
