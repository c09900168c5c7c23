"""The demo workload: simulated LLM proxy traffic published to a bus and consumed to JSONL."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventbus_core._bus import EventBus
from eventbus_core._event import Event

__all__ = ["DemoReport", "run_demo", "simulated_request"]

_MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small")
_PROMPTS = (
    "Summarise the attached incident report in three bullet points.",
    "Translate 'the cache is warm' into French and German.",
    "Write a haiku about event buses.",
    "What is the capital of Australia?",
)


def _chat_response(rng: random.Random, model: str, n: int) -> tuple[bytes, int, int]:
    prompt_tokens, completion_tokens = rng.randint(12, 900), rng.randint(5, 400)
    body = {
        "id": f"chatcmpl-{n:06d}",
        "object": "chat.completion",
        "created": 1_764_000_000 + n,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Sure. " * rng.randint(2, 40)},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return json.dumps(body).encode(), prompt_tokens, completion_tokens


def _sse_response(rng: random.Random, model: str, n: int) -> bytes:
    words = ["Event", " buses", " never", " block", " the", " request", " path", "."]
    chunks = []
    for word in words[: rng.randint(3, len(words))]:
        delta = {
            "id": f"chatcmpl-{n:06d}",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
        }
        chunks.append(f"data: {json.dumps(delta)}\n\n")
    chunks.append("data: [DONE]\n\n")
    return "".join(chunks).encode()


def simulated_request(rng: random.Random, n: int) -> Event:
    """Build the event a proxy would publish for one realistic LLM API request."""
    model = rng.choice(_MODELS)
    stream = model != "text-embedding-3-small" and rng.random() < 0.3
    if model.startswith("text-embedding"):
        path = "/v1/embeddings"
        request: dict[str, Any] = {"model": model, "input": rng.choice(_PROMPTS)}
        response = json.dumps(
            {
                "object": "list",
                "model": model,
                "data": [{"index": 0, "embedding": [0.01] * 8}],
                "usage": {"prompt_tokens": 9, "total_tokens": 9},
            }
        ).encode()
        content_type = "application/json"
    else:
        path = "/v1/chat/completions"
        request = {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": rng.choice(_PROMPTS)}],
        }
        if stream:
            response, content_type = _sse_response(rng, model, n), "text/event-stream"
        else:
            response, _, _ = _chat_response(rng, model, n)
            content_type = "application/json"
    status = rng.choices((200, 429, 500), weights=(94, 4, 2))[0]
    if status != 200:
        response = json.dumps({"error": {"message": "upstream said no", "code": status}}).encode()
        content_type = "application/json"
    return Event(
        request_id=f"req-{n:06d}",
        method="POST",
        path=path,
        status=status,
        duration=rng.randint(40, 2_500) * 1_000_000 + rng.randint(0, 999_999),
        response_headers={
            "Content-Type": [content_type],
            "X-Request-Id": [f"req-{n:06d}"],
            "Openai-Model": [model],
        },
        response_body=response,
        request_body=json.dumps(request).encode(),
    )


@dataclass
class DemoReport:
    """What the demo measured."""

    backend: str
    requests: int
    published: int
    dropped: int
    delivered: int
    written: int
    output: Path
    seconds: float
    publish_ns: list[int] = field(repr=False, default_factory=list)

    def percentile(self, q: float) -> int:
        """The q-quantile (0..1) of publish() cost, in nanoseconds."""
        data = sorted(self.publish_ns)
        if not data:
            return 0
        return data[min(len(data) - 1, int(q * len(data)))]

    def lines(self) -> list[str]:
        """The human-readable summary."""
        return [
            f"backend            {self.backend}",
            f"requests simulated {self.requests}",
            f"events published   {self.published}",
            f"events dropped     {self.dropped}",
            f"events delivered   {self.delivered}",
            f"lines written      {self.written}  -> {self.output}",
            f"publish() cost     p50 {self.percentile(0.5) / 1000:.2f} us   "
            f"p99 {self.percentile(0.99) / 1000:.2f} us   "
            f"max {max(self.publish_ns or [0]) / 1000:.1f} us",
            f"wall time          {self.seconds:.2f} s",
        ]

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data."""
        return {
            "backend": self.backend,
            "requests": self.requests,
            "published": self.published,
            "dropped": self.dropped,
            "delivered": self.delivered,
            "written": self.written,
            "output": str(self.output),
            "seconds": round(self.seconds, 3),
            "publish_p50_ns": self.percentile(0.5),
            "publish_p99_ns": self.percentile(0.99),
        }


def _consume(bus: EventBus, output: Path, ready: threading.Event, counts: list[int]) -> None:
    sub = bus.subscribe("demo-jsonl")
    ready.set()
    with output.open("wb") as fh:
        for batch in sub.batches(max_items=500):
            # One write per batch: a consumer must not pay a syscall per event either.
            fh.write(b"".join(event.to_json() + b"\n" for event in batch))
            counts[0] += len(batch)
    counts[1] = sub.stats().delivered


def run_demo(
    bus: EventBus,
    *,
    backend: str,
    output: Path,
    workers: int = 8,
    requests: int = 4_000,
    seed: int = 7,
) -> DemoReport:
    """Run `workers` simulated proxy threads publishing `requests` events; consume to `output`.

    The bus is stopped at the end, which delivers what was accepted to the consumer.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    ready = threading.Event()
    counts = [0, 0]
    consumer = threading.Thread(
        target=_consume, args=(bus, output, ready, counts), name="demo-consumer", daemon=True
    )
    consumer.start()
    ready.wait(10)
    costs: list[list[int]] = [[] for _ in range(workers)]
    per_worker = requests // workers
    start = time.perf_counter()

    def proxy_worker(index: int) -> None:
        rng = random.Random(seed + index)
        clock = time.perf_counter_ns
        mine = costs[index]
        for i in range(per_worker):
            event = simulated_request(rng, index * per_worker + i)
            # A real request spends time upstream; the pause also lets the consumer keep up.
            time.sleep(rng.random() * 0.002)
            t0 = clock()
            bus.publish(event)
            mine.append(clock() - t0)

    threads = [
        threading.Thread(target=proxy_worker, args=(i,), name=f"proxy-{i}") for i in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flush = getattr(bus, "flush", None)
    if callable(flush):
        flush(10.0)
    bus.stop()
    consumer.join(30)
    published, dropped = bus.stats()
    return DemoReport(
        backend=backend,
        requests=per_worker * workers,
        published=published,
        dropped=dropped,
        delivered=counts[1],
        written=counts[0],
        output=output,
        seconds=time.perf_counter() - start,
        publish_ns=[c for worker in costs for c in worker],
    )
