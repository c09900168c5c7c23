"""Shared consumer mode: a stuck sink is stalled after `stall_timeout`, its share dead-lettered,
while the other sinks keep flowing; per-sink mode waits without loss."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventbus_core import Dispatcher, EventBusSettings, MemoryDeadLetter
from eventbus_memory import InMemoryEventBus
from tests.core.conftest_dispatch import GatedSink, RecordingSink, make_events

# A correctness bound for a run that must complete, not a measure of speed.
BOUND = 60.0


def shared(bus: InMemoryEventBus, *sinks: RecordingSink, **kwargs: object) -> Dispatcher:
    options: dict[str, object] = {
        "group_mode": "shared",
        "batch_size": 10,
        "queue_size": 20,
        "flush_interval": 0.01,
        "stall_timeout": 0.2,
        "dead_letter": MemoryDeadLetter(),
        **kwargs,
    }
    return Dispatcher(bus, list(sinks), **options)  # type: ignore[arg-type]


async def test_a_stuck_sink_does_not_stall_the_others_in_shared_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventbus.dispatcher")
    bus = InMemoryEventBus(buffer_size=10_000)
    stuck, fast = GatedSink("stuck"), RecordingSink("fast")
    d = shared(bus, stuck, fast)
    dead = d.dead_letter
    assert isinstance(dead, MemoryDeadLetter)
    task = asyncio.create_task(d.run())
    for event in make_events(200):
        bus.publish(event)
    await asyncio.wait_for(fast.wait_for(200), BOUND)  # all 200 while "stuck" never returns

    figures = d.stats().sinks["stuck"]
    assert figures.stalled and figures.stalls == 1
    assert figures.shed == figures.dead_lettered > 0
    assert {r["error_type"] for r in dead.records} == {"Stalled"}
    assert all(r["sink"] == "stuck" for r in dead.records)
    # Not a replay of the log by LogID: it refuses a memory bus (helper-107); the dead-letter
    # file holds them (trial 201).
    assert "stalled" in caplog.text and "by LogID" not in caplog.text
    # Its dead letters' sink named apart from the plugin to send them to: "stuck" is no
    # plugin's (trial 203).
    hint = "`eventbus replay --dead-letters FILE --from-sink stuck --sink SINK`"
    assert f"replay them to it with {hint}" in caplog.text
    assert "this backend keeps no log" in caplog.text

    # It recovers: what it held goes out, then it takes new events again.
    stuck.gate.set()

    async def resumed() -> None:
        while d.stats().sinks["stuck"].stalled:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(resumed(), BOUND)
    for event in make_events(50, start=201):
        bus.publish(event)
    await asyncio.wait_for(fast.wait_for(250), BOUND)
    shed_ids = {r["log_id"] for r in dead.records}

    async def stuck_done() -> None:
        while len(stuck.payloads) + len(shed_ids) < 250:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(stuck_done(), BOUND)
    await bus.astop()
    stats = await task
    sent_ids = {p["log_id"] for p in stuck.payloads}
    assert sent_ids.isdisjoint(shed_ids)
    assert sent_ids | shed_ids == set(range(1, 251))  # each event sent or dead-lettered
    assert set(range(201, 251)) <= sent_ids  # the late events reached it: it resumed
    s = stats.sinks["stuck"]
    assert not s.stalled and s.stalls == 1
    assert s.received == s.sent + s.dead_lettered == 250
    assert "caught up" in caplog.text


async def test_per_sink_mode_waits_for_a_stuck_sink_without_loss() -> None:
    bus = InMemoryEventBus(buffer_size=10_000)
    stuck, fast = GatedSink("stuck"), RecordingSink("fast")
    d = Dispatcher(
        bus,
        [stuck, fast],
        batch_size=10,
        queue_size=20,
        flush_interval=0.01,
        stall_timeout=0.05,
        dead_letter=MemoryDeadLetter(),
    )
    task = asyncio.create_task(d.run())
    for event in make_events(200):
        bus.publish(event)
    await asyncio.wait_for(fast.wait_for(200), BOUND)
    await asyncio.sleep(0.2)  # well past stall_timeout: per-sink mode still does not shed
    assert d.stats().sinks["stuck"].shed == 0 and not d.stats().sinks["stuck"].stalled
    stuck.gate.set()
    await asyncio.wait_for(stuck.wait_for(200), BOUND)
    await bus.astop()
    stats = await task
    assert stats.sinks["stuck"].sent == 200 and stats.sinks["stuck"].dead_lettered == 0


async def test_a_zero_stall_timeout_waits_as_before() -> None:
    bus = InMemoryEventBus(buffer_size=10_000)
    stuck, fast = GatedSink("stuck"), RecordingSink("fast")
    d = shared(bus, stuck, fast, stall_timeout=0)
    task = asyncio.create_task(d.run())
    for event in make_events(100):
        bus.publish(event)
    await asyncio.wait_for(stuck.waiting.wait(), BOUND)
    await asyncio.sleep(0.3)
    assert d.stats().sinks["stuck"].shed == 0
    assert len(fast.payloads) < 100  # held back with the stuck one, as configured
    stuck.gate.set()
    await asyncio.wait_for(fast.wait_for(100), BOUND)
    await bus.astop()
    stats = await task
    assert stats.sinks["stuck"].sent == 100


def test_stall_timeout_setting_flag_and_validation() -> None:
    settings = EventBusSettings(sinks="console", dead_letter_path="", stall_timeout=2.5)
    assert Dispatcher.from_settings(settings, bus=InMemoryEventBus()).stall_timeout == 2.5
    with pytest.raises(ValueError, match="EVENTBUS_STALL_TIMEOUT"):
        EventBusSettings(stall_timeout=-1)
    with pytest.raises(ValueError, match="stall_timeout"):
        Dispatcher(InMemoryEventBus(), [RecordingSink()], stall_timeout=-1)
    from eventbus_core.cli import build_parser

    args = build_parser().parse_args(["dispatch", "--stall-timeout", "7"])
    assert args.stall_timeout == 7.0


async def test_without_a_dead_letter_destination_the_shed_share_is_counted_as_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InMemoryEventBus(buffer_size=10_000)
    stuck, fast = GatedSink("stuck"), RecordingSink("fast")
    d = shared(bus, stuck, fast, dead_letter=None)
    task = asyncio.create_task(d.run())
    for event in make_events(200):
        bus.publish(event)
    await asyncio.wait_for(fast.wait_for(200), BOUND)
    assert "dropped and counted" in caplog.text
    stuck.gate.set()
    await bus.astop()
    stats = await task
    s = stats.sinks["stuck"]
    assert s.dropped == s.shed > 0 and s.sent + s.dropped == s.received == 200
    # One line when it stalled, not one per batch it shed.
    assert sum("no dead-letter destination" in r.getMessage() for r in caplog.records) == 1
