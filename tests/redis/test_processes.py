"""Several processes on one real Redis: LogID order, cross-process subscribe, consumer crash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest
import redis

from eventbus_core import Event
from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests._services import redis_url

pytestmark = pytest.mark.redis


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """Run `code` in a fresh interpreter of this environment, with text pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


PUBLISHER = """
    import sys, redis
    from eventbus_core.testing import make_event
    from eventbus_redis import RedisEventBus
    url, key, name = sys.argv[1:4]
    client = redis.Redis.from_url(url)
    bus = RedisEventBus.log(client, key, ttl=300, max_len=0, buffer_size=5000)
    client.blpop([key + ":go"], timeout=60)  # start together with the other publishers
    for i in range(1000):
        bus.publish(make_event(i, request_id=f"{name}-{i}"))
    assert bus.flush(30)
    bus.stop()
    print(tuple(bus.stats()))
"""


def test_three_publishers_two_threads_one_process_give_gapless_ordered_log_ids(
    real: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:order"
    child = python(PUBLISHER, redis_url(), key, "proc")
    buses = [RedisEventBus.log(real, key, ttl=300, max_len=0, buffer_size=5000) for _ in range(2)]
    ready = threading.Barrier(3)

    def run(n: int) -> None:
        ready.wait()
        for i in range(1000):
            buses[n].publish(make_event(i, request_id=f"thread{n}-{i}"))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    real.rpush(f"{key}:go", "go")
    ready.wait()
    for t in threads:
        t.join()
    for bus in buses:
        assert bus.flush(30)
        bus.stop()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "(1000, 0)"
    log_ids = [json.loads(raw)["LogID"] for raw in real.lrange(key, 0, -1)]
    assert log_ids == list(range(3000, 0, -1))  # newest first, strictly LogID order, no gap
    names = {e.request_id for e in buses[0].read_events()}
    assert len(names) == 3000 and {n.split("-")[0] for n in names} == {"thread0", "thread1", "proc"}


SUBSCRIBER = """
    import sys, redis
    from eventbus_redis import RedisEventBus
    url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    bus = RedisEventBus.log(redis.Redis.from_url(url), key, ttl=300, max_len=0)
    sub = bus.subscribe()
    print("ready", flush=True)
    for _ in range(count):
        print(sub.get(timeout=30).log_id, flush=True)
    bus.stop()
"""


def test_subscriber_in_another_process_receives_every_new_event_in_order(
    real: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:xsub"
    with RedisEventBus.log(real, key, ttl=300, max_len=0) as bus:
        bus.publish(make_event(0))  # before the subscriber: not for it
        assert bus.flush(10)
        child = python(SUBSCRIBER, redis_url(), key, "500")
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        for i in range(1, 501):
            bus.publish(make_event(i))
        assert bus.flush(10)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert [int(line) for line in out.split()] == list(range(2, 502))


CRASHING_CONSUMER = """
    import os, sys, redis
    from eventbus_redis import RedisStreamsEventBus
    url, stream, group = sys.argv[1:4]
    bus = RedisStreamsEventBus(redis.Redis.from_url(url), stream, group)
    consumer = bus.consumer(name="doomed")
    got = []
    while len(got) < 20:
        got += consumer.read(20 - len(got), timeout=1)
    print(" ".join(d.token for d in got), flush=True)
    os._exit(1)  # dies between receipt and acknowledgement
"""


def test_entries_of_a_consumer_killed_before_ack_go_to_another_consumer(
    real: redis.Redis, prefix: str
) -> None:
    stream, group = f"{prefix}:s", f"{prefix}:g"
    with RedisStreamsEventBus(real, stream, group) as bus:
        for i in range(50):
            bus.publish(make_event(i))
        assert bus.flush(10)
        child = python(CRASHING_CONSUMER, redis_url(), stream, group)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 1, err
        taken = out.split()
        assert len(taken) == 20
        survivor = bus.consumer(name="survivor", claim_idle=0.1)
        seen: dict[str, Event] = {}
        for _ in range(300):
            deliveries = survivor.read(100, timeout=0.05)
            for d in deliveries:
                seen[d.token] = d.event
            survivor.ack([d.token for d in deliveries])
            if len(seen) == 50:
                break
        assert set(taken) <= set(seen)
        assert sorted(e.request_id for e in seen.values()) == sorted(f"req-{i}" for i in range(50))
        assert bus.stream_info()["pending"] == 0
