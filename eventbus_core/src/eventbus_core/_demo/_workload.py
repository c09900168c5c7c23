"""The demo workload: simulated LLM proxy traffic published to a bus and consumed to JSONL.

`simulate()` is the proxy side (threads publishing one event per request), shared by both modes
of `eventbus demo`; `run_demo()` is the in-process mode (memory bus, a consumer thread). The
multi-process mode of shared backends is in `_demo/_shared.py`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from eventbus_core._bus import EventBus
from eventbus_core._demo._report import DemoReport
from eventbus_core._event import Event
from eventbus_core.capabilities import Flushable, capability
from eventbus_core.cli._ending import within_ending

__all__ = [
    "DemoInterrupted",
    "DemoReport",
    "ProgressFactory",
    "run_demo",
    "simulate",
    "simulated_request",
    "spread",
]

ProgressFactory: TypeAlias = Callable[[], contextlib.AbstractContextManager[Callable[[int], None]]]
"""Opens a progress display for the requests: a context manager that gives a thread-safe
`advance(n)`. The demo opens it just before the first request, and leaves it after the last."""


class DemoInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the demo; it stopped what it had started and says how far it got.

    Args:
        done: Requests simulated before the interruption.
        requests: Requests the run was to simulate.
        detail: What became of what was already published (counts, file, keys).
    """

    def __init__(self, done: int, requests: int, detail: str = "") -> None:
        super().__init__(done, requests, detail)
        self.done = done
        self.requests = requests
        self.detail = detail

    def summary(self) -> str:
        """One line for stderr."""
        tail = f"; {self.detail}" if self.detail else ""
        return f"eventbus demo: interrupted after {self.done} of {self.requests} requests{tail}"


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


def simulated_request(rng: random.Random, n: int, prefix: str = "req") -> Event:
    """Build the event a proxy would publish for one realistic LLM API request.

    Its request id is `{prefix}-{n:06d}`.
    """
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
        request_id=f"{prefix}-{n:06d}",
        method="POST",
        path=path,
        status=status,
        duration=rng.randint(40, 2_500) * 1_000_000 + rng.randint(0, 999_999),
        response_headers={
            "Content-Type": [content_type],
            "X-Request-Id": [f"{prefix}-{n:06d}"],
            "Openai-Model": [model],
        },
        response_body=response,
        request_body=json.dumps(request).encode(),
    )


def spread(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` shares that differ by at most one and add up to `total`."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def simulate(
    bus: EventBus,
    *,
    workers: int,
    requests: int,
    seed: int = 7,
    first_worker: int = 0,
    first_request: int = 0,
    prefix: str = "req",
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Publish `requests` simulated proxy requests from `workers` threads; return the costs.

    Args:
        bus: Where to publish.
        workers: Proxy threads; the requests are spread over them, remainder included.
        requests: Exactly how many requests to simulate.
        seed: Worker `i` draws from `random.Random(seed + first_worker + i)`.
        first_worker: Index of this call's first worker among all (other processes' too).
        first_request: Number of this call's first request, so numbers stay unique.
        prefix: Request ids are `{prefix}-{n:06d}`.
        progress: Called with 1 after each request, from the worker threads.

    Returns:
        The cost of each `publish()` call, in nanoseconds.

    Raises:
        DemoInterrupted: Ctrl-C; the proxy threads were stopped first (after their current
            request), and `done` counts the requests they had published.
    """
    # A thread with no request to make does nothing: 100,000 of them for 10 requests made the
    # demo hang (trial 249), as did summing the shares again for each start.
    workers = max(1, min(workers, requests))
    shares = spread(requests, workers)
    starts = [first_request + done for done in itertools.accumulate(shares, initial=0)][:workers]
    costs: list[list[int]] = [[] for _ in range(workers)]
    halt = threading.Event()

    def proxy_worker(index: int) -> None:
        rng = random.Random(seed + first_worker + index)
        clock = time.perf_counter_ns
        mine = costs[index]
        for n in range(starts[index], starts[index] + shares[index]):
            if halt.is_set():
                return
            event = simulated_request(rng, n, prefix)
            # A real request spends time upstream; the pause also lets the consumer keep up.
            time.sleep(rng.random() * 0.002)
            t0 = clock()
            bus.publish(event)
            mine.append(clock() - t0)
            if progress is not None:
                progress(1)

    # Daemon threads: a second Ctrl-C must not wait for them either.
    threads = [
        threading.Thread(target=proxy_worker, args=(i,), name=f"proxy-{i}", daemon=True)
        for i in range(workers)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        halt.set()
        for t in threads:
            if t.is_alive():
                t.join()
        raise DemoInterrupted(sum(len(c) for c in costs), requests) from None
    return [c for worker in costs for c in worker]


def _consume(
    bus: EventBus, output: Path, ready: threading.Event, counts: list[int], failure: list[str]
) -> None:
    sub = bus.subscribe("demo-jsonl")
    ready.set()
    fh = output.open("wb")
    try:
        for batch in sub.batches(max_items=500):
            if failure:
                continue  # the output failed: still take the events, so the figures count them
            try:
                # One write per batch: a consumer must not pay a syscall per event either.
                # Flushed, so that a line counts as written only once the file has it.
                fh.write(b"".join(event.to_json() + b"\n" for event in batch))
                fh.flush()
            except OSError as exc:  # a full disk, a quota: said in the summary, not a traceback
                failure.append(f"cannot write {output}: {exc.strerror or exc}")
                continue
            counts[0] += len(batch)
    finally:
        counts[1] = sub.stats().delivered
        # What it could not write was said above (close retries the same bytes).
        with contextlib.suppress(OSError):
            fh.close()


def run_demo(
    bus: EventBus,
    *,
    backend: str,
    output: Path,
    workers: int = 8,
    requests: int = 4_000,
    seed: int = 7,
    progress: ProgressFactory | None = None,
) -> DemoReport:
    """Run `workers` simulated proxy threads publishing `requests` events; consume to `output`.

    Everything runs in this process: the proxy threads and one consumer thread, which writes
    each event in the wire format. The bus is stopped at the end, which delivers what was
    accepted to the consumer. `progress` shows the requests as they are simulated.

    Raises:
        DemoInterrupted: Ctrl-C. The proxy threads stop, the bus is stopped (what it had
            accepted is still written, within a second) and the exception says how far it got.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    ready = threading.Event()
    counts = [0, 0]
    failure: list[str] = []
    consumer = threading.Thread(
        target=_consume,
        args=(bus, output, ready, counts, failure),
        name="demo-consumer",
        daemon=True,
    )
    consumer.start()
    start = time.perf_counter()
    try:
        ready.wait(10)
        with progress() if progress is not None else contextlib.nullcontext(None) as advance:
            costs = simulate(bus, workers=workers, requests=requests, seed=seed, progress=advance)
        flushable = capability(bus, Flushable)
        if flushable is not None:
            flushable.flush(10.0)
    except KeyboardInterrupt as exc:
        done = exc.done if isinstance(exc, DemoInterrupted) else 0
        bus.stop(timeout=0.5)
        consumer.join(0.5)
        stats = bus.stats()
        published, dropped = stats
        # The consumer's subscription may have dropped too (it fell behind): said here, not
        # only in its WARNING line (trial 131).
        behind = sum(s.dropped for s in stats.subscribers)
        fell_behind = f" (and {behind} by the consumer, which fell behind)" if behind else ""
        raise DemoInterrupted(
            done,
            requests,
            f"{published} published, {dropped} dropped{fell_behind}, {counts[0]} written to "
            f"{output}",
        ) from None
    with within_ending():  # SIGTERM now must not cut the delivery of what was accepted
        bus.stop()
        consumer.join(30)
    stats = bus.stats()
    published, dropped = stats
    return DemoReport(
        backend=backend,
        requests=requests,
        published=published,
        dropped=dropped,
        # What the consumer's own subscription dropped, said in the summary: a finished run
        # that lost events this way said only "FAILED" (trial 198).
        consumer_dropped=sum(s.dropped for s in stats.subscribers),
        delivered=counts[1],
        written=counts[0],
        output=output,
        seconds=time.perf_counter() - start,
        publish_ns=costs,
        output_error=failure[0] if failure else "",
    )
