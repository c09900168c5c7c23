"""`DemoReport`: what `eventbus demo` measured, as summary lines or plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoReport"]


@dataclass
class DemoReport:
    """What the demo measured.

    `delivered` counts distinct events that reached the consumer; `written` the lines it wrote.
    They differ only where a backend redelivers (a consumer group, after a consumer stalled):
    the multi-process mode counts `delivered` by LogID, so a repeated line is not taken for a
    new event. Its fields (`publishers` and after) stay at their defaults in the in-process
    mode. `namespace` is where the run's events went (a key, stream or file: the backend's
    `Isolation.where`); its JSON also carries it as `redis_key`, its earlier name.
    """

    backend: str
    requests: int
    published: int
    dropped: int
    delivered: int
    written: int
    output: Path
    seconds: float
    publish_ns: list[int] = field(repr=False, default_factory=list)
    publishers: int = 0
    namespace: str = ""
    namespace_kind: str = "namespace"
    cleanup: str = ""
    output_error: str = ""
    consumer_dropped: int = 0  # the consumer's subscription's drops: it fell behind

    @property
    def lossless(self) -> bool:
        """True if every request was counted and every accepted event was delivered."""
        accounted = self.published + self.dropped == self.requests
        delivered = self.delivered == self.published and self.written >= self.delivered
        return accounted and delivered and not self.output_error

    def percentile(self, q: float) -> int:
        """The q-quantile (0..1) of publish() cost, in nanoseconds."""
        data = sorted(self.publish_ns)
        if not data:
            return 0
        return data[min(len(data) - 1, int(q * len(data)))]

    def lines(self) -> list[str]:
        """The human-readable summary."""
        backend = self.backend
        if self.publishers:
            noun = "process" if self.publishers == 1 else "processes"
            backend += f" ({self.publishers} publisher {noun}, 1 dispatcher process)"
        out = [
            f"backend            {backend}",
            f"requests simulated {self.requests}",
            f"events published   {self.published}",
            f"events dropped     {self.dropped}",
            f"events delivered   {self.delivered}",
        ]
        if self.consumer_dropped:
            out.append(
                f"consumer dropped   {self.consumer_dropped}  (it fell behind: its "
                "subscription's buffer was full)"
            )
        out += [
            f"lines written      {self.written}  -> {self.output}",
            f"publish() cost     p50 {self.percentile(0.5) / 1000:.2f} us   "
            f"p99 {self.percentile(0.99) / 1000:.2f} us   "
            f"max {max(self.publish_ns or [0]) / 1000:.1f} us",
            f"wall time          {self.seconds:.2f} s",
        ]
        if self.namespace:
            out.append(f"{self.namespace_kind:<18} {self.namespace}, {self.cleanup}")
        if self.output_error:
            out.append(f"output error       {self.output_error}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data."""
        data: dict[str, Any] = {
            "backend": self.backend,
            "requests": self.requests,
            "published": self.published,
            "dropped": self.dropped,
            "delivered": self.delivered,
            "consumer_dropped": self.consumer_dropped,
            "written": self.written,
            "output": str(self.output),
            "seconds": round(self.seconds, 3),
            "publish_p50_ns": self.percentile(0.5),
            "publish_p99_ns": self.percentile(0.99),
        }
        if self.output_error:
            data["output_error"] = self.output_error
        if self.publishers:
            data.update(
                publishers=self.publishers,
                namespace=self.namespace,
                redis_key=self.namespace,  # its name before backends were plugins; kept
                cleanup=self.cleanup,
            )
        return data
