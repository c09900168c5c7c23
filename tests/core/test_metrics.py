"""Self-metrics: one table, read at scrape time, exported to Prometheus (parsed back with
prometheus_client.parser) and OpenTelemetry (an SDK reader), the probes, and the endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventbus_core import Dispatcher, EventBusSettings, MemoryDeadLetter, SettingsError, create_bus
from eventbus_core.cli import main
from eventbus_core.dispatch._stats import DispatcherStats
from eventbus_core.metrics import (
    METRICS,
    Check,
    HealthProbe,
    MetricsEndpoint,
    register_otel,
    register_prometheus,
)
from eventbus_core.metrics._figures import FiguresReader
from tests.core.conftest_dispatch import AlwaysFailing, RecordingSink, make_events

ROOT = Path(__file__).resolve().parent.parent.parent


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back: (name, sorted labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_prometheus_counters_match_published_dropped_sent_and_dead_lettered() -> None:
    bus = create_bus(EventBusSettings(backend="memory"))
    ok, broken = RecordingSink("ok"), AlwaysFailing("broken", permanent=True)
    dead = MemoryDeadLetter()
    d = Dispatcher(bus, [ok, broken], batch_size=5, flush_interval=0.01, dead_letter=dead)
    registry = CollectorRegistry()
    register_prometheus(bus, dispatcher=d, registry=registry)
    task = asyncio.create_task(d.run())
    for event in make_events(12):
        bus.publish(event)
    await ok.wait_for(12)
    await wait_until(lambda: len(dead.records) == 12)
    m = scrape(registry)
    assert m[("eventbus_events_published_total", ())] == 12
    assert m[("eventbus_events_dropped_total", (("reason", "refused"),))] == 0
    assert m[("eventbus_sink_sent_total", (("sink", "ok"),))] == 12
    assert m[("eventbus_sink_dead_lettered_total", (("sink", "broken"),))] == 12
    assert m[("eventbus_sink_sent_total", (("sink", "broken"),))] == 0
    failed = (("error_type", "PermanentSinkError"), ("sink", "broken"))
    assert m[("eventbus_sink_failed_total", failed)] == 3  # three batches of 5, 5, 2
    assert m[("eventbus_batch_duration_seconds_count", (("sink", "ok"),))] >= 3
    assert m[("eventbus_consumer_read_total", (("lane", "ok"),))] == 12
    bus.stop()
    for event in make_events(3):
        bus.publish(event)  # refused by a stopped bus: counted as dropped
    await task
    m = scrape(registry)
    assert m[("eventbus_events_published_total", ())] == 12
    assert m[("eventbus_events_dropped_total", (("reason", "refused"),))] == 3


async def test_what_the_bus_dropped_for_a_lane_is_counted_for_that_lane() -> None:
    # eventbus_consumer_dropped_total had no lane label: with two lanes, a per-sink check of
    # published = received + dropped needed the WARNING lines (trials 102 and 103).
    from tests.core.conftest_dispatch import GatedSink

    bus = create_bus(EventBusSettings(backend="memory"))
    fast, slow = RecordingSink("fast"), GatedSink("slow")
    d = Dispatcher(
        bus, [fast, slow], batch_size=5, flush_interval=0.01, subscription_buffer=10,
        queue_size=5, stall_timeout=60,
    )  # fmt: skip
    registry = CollectorRegistry()
    register_prometheus(dispatcher=d, registry=registry)
    task = asyncio.create_task(d.run())
    await asyncio.sleep(0.05)
    published = 0
    for event in make_events(200):
        bus.publish(event)
        published += 1
        if published % 10 == 0:
            await asyncio.sleep(0.005)  # the fast lane keeps up; the slow one is held
    await fast.wait_for(200)
    slow.gate.set()
    bus.stop()
    stats = await asyncio.wait_for(task, 20)
    m = scrape(registry)
    dropped = {
        lane: m[("eventbus_consumer_dropped_total", (("lane", lane),))] for lane in ("fast", "slow")
    }
    assert dropped["fast"] == 0 and dropped["slow"] > 0, dropped
    assert sum(dropped.values()) == stats.source_dropped
    assert stats.sinks["slow"].received + dropped["slow"] == published
    assert stats.lanes["slow"]["dropped"] + stats.lanes["slow"]["never_read"] == dropped["slow"]


def test_register_prometheus_in_the_default_registry_and_only_once() -> None:
    from prometheus_client import REGISTRY

    bus = create_bus(EventBusSettings(backend="memory"))
    collector = register_prometheus(bus)
    try:
        assert "eventbus_events_published_total" in generate_latest(REGISTRY).decode()
        with pytest.raises(ValueError, match="Duplicated"):
            register_prometheus(bus)
    finally:
        REGISTRY.unregister(collector)
        bus.stop()
    with pytest.raises(ValueError, match="a bus, a dispatcher"):
        register_prometheus(None)


def test_openmetrics_scrapes_say_the_unit_of_what_is_in_seconds() -> None:
    # The unit was only in the name; OpenMetrics readers take it from `# UNIT` (trial 222).
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    bus = create_bus(EventBusSettings(backend="memory"))
    dispatcher = Dispatcher(bus, [RecordingSink()])
    registry = CollectorRegistry()
    register_prometheus(bus, dispatcher=dispatcher, registry=registry)
    try:
        text = openmetrics(registry).decode()
        assert "# UNIT eventbus_sink_lag_seconds seconds" in text, text
        assert "# UNIT eventbus_batch_duration_seconds seconds" in text, text
        assert "# UNIT eventbus_events_published " not in text  # a count has none
        assert "eventbus_sink_lag_seconds" in generate_latest(registry).decode()  # same names
    finally:
        bus.stop()


async def test_otel_instruments_read_the_same_figures() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    bus = create_bus(EventBusSettings(backend="memory"))
    sink = RecordingSink("ok")
    d = Dispatcher(bus, [sink], batch_size=5, flush_interval=0.01)
    assert register_otel(bus, d, meter_provider=provider) is not None
    task = asyncio.create_task(d.run())
    for event in make_events(7):
        bus.publish(event)
    await sink.wait_for(7)
    bus.stop()
    await task
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "eventbus"
            for metric in sm.metrics:
                points[metric.name] = {
                    tuple(sorted(p.attributes.items())): p.value for p in metric.data.data_points
                }
    assert points["eventbus.events.published"] == {(): 7}
    assert points["eventbus.sink.sent"] == {(("sink", "ok"),): 7}
    assert points["eventbus.batch.duration.count"][(("sink", "ok"),)] >= 2
    expected = {m.name for m in METRICS if m.kind != "summary"}
    expected |= {"eventbus.batch.duration.sum", "eventbus.batch.duration.count"}
    assert set(points) <= expected  # nothing but the table's metrics
    assert "eventbus.consumer.read" in points and "eventbus.buffer.depth" in points
    provider.shutdown()


def test_otel_refuses_metrics_a_provider_has_already() -> None:
    # A second register_otel on the same provider was ignored by OpenTelemetry without a word:
    # only the first bus's count was reported (3, where the second had 5; trial 102).
    from opentelemetry.sdk.metrics import MeterProvider

    provider = MeterProvider()
    first = create_bus(EventBusSettings(backend="memory"))
    second = create_bus(EventBusSettings(backend="memory"))
    d = Dispatcher(first, [RecordingSink("ok")])
    try:
        assert register_otel(first, meter_provider=provider) is not None
        with pytest.raises(ValueError, match=r"eventbus\.events\.published.* already registered"):
            register_otel(second, meter_provider=provider)
        # The dispatcher's own metrics, registered apart from its bus's, are welcome.
        assert register_otel(dispatcher=d, meter_provider=provider) is not None
        assert register_otel(second, meter_provider=MeterProvider()) is not None
    finally:
        first.stop()
        second.stop()
        provider.shutdown()


def test_otel_registers_nothing_without_a_configured_provider() -> None:
    from opentelemetry.metrics import NoOpMeterProvider, get_meter_provider

    bus = create_bus(EventBusSettings(backend="memory"))
    try:
        assert register_otel(bus) is None  # the API's default proxy: no SDK configured
        assert type(get_meter_provider()).__name__ == "_ProxyMeterProvider"
        assert register_otel(bus, meter_provider=NoOpMeterProvider()) is None
    finally:
        bus.stop()


def test_importing_eventbus_imports_no_exporter() -> None:
    code = (
        "import sys, eventbus_core, eventbus_core.metrics, eventbus_core.sinks, "
        "eventbus_core.cli._dispatch_cmd\n"
        "from eventbus_core.metrics import register_prometheus, register_otel, METRICS\n"
        "bad = [m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry', "
        "'google.protobuf'))]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_metrics_reference_documents_the_table() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(eventbus\.[a-z_.]+)`", text, re.MULTILINE))
    assert documented == {m.name for m in METRICS}
    for metric in METRICS:
        assert f"`{metric.prometheus_name}" in text, metric.prometheus_name


# ---------------------------------------------------------------------------------- probes


def test_the_alert_rules_read_every_loss_counter_and_only_metrics_that_exist() -> None:
    # The ready-made rules missed eventbus_consumer_dropped_total (1418 events gone while every
    # rule stayed at 0, trial 102): each counter of events lost, dropped, missed or
    # dead-lettered is read by some rule, and a rule names no metric the table lacks.
    import yaml

    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split("### Alert rules", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    exprs = " ".join(str(rule["expr"]) for rule in rules)
    used = set(re.findall(r"\beventbus_[a-z_]+", exprs))
    exposed = set()
    for m in METRICS:
        name = m.prometheus_name + ("_total" if m.kind == "counter" else "")
        exposed |= {name, f"{name}_count", f"{name}_sum"}
    assert used <= exposed, used - exposed
    losses = {
        f"{m.prometheus_name}_total"
        for m in METRICS
        if m.kind == "counter" and re.search(r"dropped|lost|missed|dead_lettered|rejected", m.name)
    }
    assert losses <= used, losses - used


async def test_readiness_turns_red_for_a_sink_failing_for_good_and_back() -> None:
    outcomes = [False, True]  # the first batch is refused, later ones go through

    class Recovering(RecordingSink):
        async def send(self, batch: Any) -> None:
            if not outcomes.pop(0) if outcomes else False:
                from eventbus_core import PermanentSinkError

                raise PermanentSinkError("HTTP 400")
            await super().send(batch)

    bus = create_bus(EventBusSettings(backend="memory"))
    sink = Recovering("flaky")
    dead = MemoryDeadLetter()
    d = Dispatcher(bus, [sink], batch_size=3, flush_interval=0.01, dead_letter=dead)
    probe = HealthProbe(d, bus)
    assert not probe.readiness().ok  # not started
    assert probe.liveness().ok
    beat = asyncio.create_task(probe.heartbeat())
    task = asyncio.create_task(d.run())
    await asyncio.sleep(0)
    assert probe.readiness().ok
    for event in make_events(3):
        bus.publish(event)
    await wait_until(lambda: len(dead.records) == 3)
    health = probe.readiness()
    assert not health.ok
    [failing] = [c for c in health.checks if not c.ok]
    assert failing.name == "sink:flaky" and "3 event(s) it failed to deliver" in failing.detail
    assert probe.liveness().ok  # alive all the same: restarting would not help
    for event in make_events(3, start=4):
        bus.publish(event)
    await sink.wait_for(3)
    assert probe.readiness().ok
    bus.stop()
    await task
    beat.cancel()
    probe.state = "stopped"
    assert not probe.liveness().ok


async def test_readiness_reports_a_stalled_sink() -> None:
    from tests.core.conftest_dispatch import GatedSink

    bus = create_bus(EventBusSettings(backend="memory"))
    sink = GatedSink("stuck")
    d = Dispatcher(bus, [sink], batch_size=1, flush_interval=0.01)
    probe = HealthProbe(d, bus, max_lag=0.05)
    probe.state = "running"
    task = asyncio.create_task(d.run())
    bus.publish(make_events(1)[0])
    await sink.waiting.wait()
    await asyncio.sleep(0.1)
    [check] = [c for c in probe.readiness().checks if c.name == "sink:stuck"]
    assert not check.ok and "stalled" in check.detail
    sink.gate.set()
    bus.stop()
    await task


async def test_a_dispatcher_winding_down_is_not_ready() -> None:
    # From SIGTERM on, while the dispatcher sent what it held, /readyz said 200, "running" and
    # "reading", though no lane read any more (helper-92).
    from tests.core.conftest_dispatch import GatedSink

    bus = create_bus(EventBusSettings(backend="memory"))
    sink = GatedSink("held")
    d = Dispatcher(bus, [sink], batch_size=1, flush_interval=0.01, shutdown_timeout=5)
    probe = HealthProbe(d, bus, max_lag=0)
    beat = asyncio.create_task(probe.heartbeat())
    task = asyncio.create_task(d.run())
    bus.publish(make_events(1)[0])
    await sink.waiting.wait()
    assert probe.readiness().ok
    d.request_stop()
    await asyncio.sleep(0.05)  # the dispatcher is in its shutdown, waiting for the sink
    assert not task.done()
    health = probe.readiness()
    assert not health.ok
    assert health.checks == (Check("dispatcher", False, "the dispatcher is stopping"),)
    assert probe.liveness().ok and probe.liveness().checks[0].detail == "stopping"
    sink.gate.set()
    await task
    beat.cancel()
    bus.stop()


async def test_a_stuck_loop_is_neither_alive_nor_ready() -> None:
    # /healthz said the loop was stuck while /readyz, going by the last figures, said ready.
    bus = create_bus(EventBusSettings(backend="memory"))
    probe = HealthProbe(Dispatcher(bus, [RecordingSink("ok")]), bus, stall_after=0.05)
    probe.state = "running"
    probe._beat = time.monotonic()
    assert probe.readiness().ok and probe.liveness().ok
    time.sleep(0.1)  # the loop's heartbeat does not come: this test holds the loop
    for health in (probe.readiness(), probe.liveness()):
        [check] = health.checks
        assert not check.ok and check.name == "event_loop"
    bus.stop()


def test_a_sink_shedding_its_share_is_not_ready() -> None:
    # In shared mode a stalled sink's events are dead-lettered as they come ("Stalled"), which
    # is not counted as its failing: /readyz said "delivering" meanwhile.
    bus = create_bus(EventBusSettings(backend="memory"))
    d = Dispatcher(bus, [RecordingSink("slow")])
    probe = HealthProbe(d, bus, max_lag=0)
    probe.state = "running"
    d.workers[0].mark_stalled(30.0)
    [check] = [c for c in probe.readiness().checks if c.name == "sink:slow"]
    assert not check.ok and "its share of new events is dead-lettered" in check.detail
    bus.stop()


async def test_readiness_asks_a_reachable_backend() -> None:
    from eventbus_core import BackendUnavailableError

    class CheckedBus:
        """A memory bus that also offers the `Reachable` capability."""

        def __init__(self) -> None:
            self.inner = create_bus(EventBusSettings(backend="memory"))
            self.up = True

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def check(self, timeout: float = 2.0) -> None:
            if not self.up:
                raise BackendUnavailableError("redis://:***@cache:6379/0 did not answer in 2 s")

    bus = CheckedBus()
    d = Dispatcher(bus.inner, [RecordingSink("ok")], flush_interval=0.01)
    probe = HealthProbe(d, bus)
    probe.state = "running"
    assert [c.name for c in probe.readiness().checks][:2] == ["dispatcher", "backend"]
    assert probe.readiness().ok
    bus.up = False
    [failing] = [c for c in probe.readiness().checks if not c.ok]
    assert failing.name == "backend" and "did not answer" in failing.detail
    bus.inner.stop()
    await d.run()


# -------------------------------------------------------------------------------- endpoint


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_endpoint_serves_metrics_and_probes() -> None:
    bus = create_bus(EventBusSettings(backend="memory"))
    sink = RecordingSink("ok")
    d = Dispatcher(bus, [sink], flush_interval=0.01)
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    base = f"http://127.0.0.1:{endpoint.port}"
    try:
        endpoint.attach(d, bus=bus)
        endpoint.start()
        status, _, body = await asyncio.to_thread(get, base + "/readyz")
        assert (
            status == 503
            and json.loads(body)["checks"][0]["detail"] == "the dispatcher is starting"
        )
        task = asyncio.create_task(endpoint.run(d))
        await asyncio.sleep(0.05)
        bus.publish(make_events(1)[0])
        await sink.wait_for(1)
        status, kind, body = await asyncio.to_thread(get, base + "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        assert 'eventbus_sink_sent_total{sink="ok"} 1.0' in body
        assert "process_cpu_seconds_total" in body
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, base + "/nope"))[0] == 404
        bus.stop()
        await task
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 503
    finally:
        endpoint.close()


@pytest.mark.parametrize(
    ("host", "shown"),
    [("0.0.0.0", "listening on every interface"), ("127.0.0.1", "http://127.0.0.1:")],
)
def test_the_start_line_says_when_every_interface_listens(
    host: str, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    # "metrics on http://localhost:9463/metrics" read as local only, for a server on 0.0.0.0
    # that other hosts reach (trial 163).
    endpoint = MetricsEndpoint(host, 0)
    try:
        with caplog.at_level("INFO", logger="eventbus"):
            endpoint.start()
    finally:
        endpoint.close()
    [line] = [r.getMessage() for r in caplog.records if "metrics on" in r.getMessage()]
    assert shown in line
    assert ("every interface" in line) == (host == "0.0.0.0")


def test_a_consumer_that_lost_its_server_is_not_said_to_join_yet() -> None:
    # "consumer group not joined yet" of a group joined minutes before Redis paused (163).
    from eventbus_core.metrics._health import _lane_check

    check = _lane_check("jsonl", {"group_joined": False, "last_error": "TimeoutError: x"})
    assert not check.ok and "yet" not in check.detail and "joins once reachable" in check.detail


def test_a_port_in_use_names_the_flag_and_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = MetricsEndpoint("127.0.0.1", 0)
    try:
        with pytest.raises(SettingsError, match="--metrics-port / EVENTBUS_METRICS_PORT"):
            MetricsEndpoint("127.0.0.1", first.port)
        # A mistake of the user's: exit 2 with one line, not an "internal error".
        code = main(["dispatch", "--sink", "console", "--metrics-port", str(first.port)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Address already in use" in err and "internal error" not in err
    finally:
        first.close()


def test_an_address_that_is_not_this_hosts_names_the_host_setting() -> None:
    # The port is fine: blaming --metrics-port would send the user to the wrong setting.
    for host in ("no-such-host.invalid", "192.0.2.1"):
        with pytest.raises(SettingsError, match="--metrics-host / EVENTBUS_METRICS_HOST") as info:
            MetricsEndpoint(host, 0)
        assert "metrics-port" not in str(info.value)


def test_an_ipv6_host_is_served() -> None:
    # ThreadingHTTPServer binds IPv4 only: "::1" was refused as an address of another host.
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    endpoint = MetricsEndpoint("::1", 0)
    endpoint.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{endpoint.port}/metrics", timeout=5) as reply:
            assert reply.status == 200
    finally:
        endpoint.close()


def test_head_answers_like_get_without_a_body() -> None:
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    endpoint.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{endpoint.port}/metrics", method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and response.read() == b""
            assert int(response.headers["Content-Length"]) > 0
    finally:
        endpoint.close()


def test_a_client_that_leaves_before_the_answer_costs_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A probe that timed out while /readyz waited for a frozen backend: the answer hit a closed
    # socket, the 500 tried after it too, and socketserver printed two tracebacks to stderr,
    # past the logging filter that scrubs secrets.
    import socket
    import struct

    from eventbus_core.metrics._health import Health

    endpoint = MetricsEndpoint("127.0.0.1", 0)
    answered = threading.Event()

    def slow_health(path: str) -> Health:
        time.sleep(0.3)  # the client is gone by now
        answered.set()
        return Health(())

    endpoint.health = slow_health  # type: ignore[method-assign]
    endpoint.start()
    try:
        for _ in range(3):
            answered.clear()
            client = socket.create_connection(("127.0.0.1", endpoint.port))
            client.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            # Closed with a reset: the server's first write fails at once.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            assert answered.wait(5)
            time.sleep(0.1)
    finally:
        endpoint.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred during processing" not in err


def test_a_connection_error_inside_a_probe_still_answers_500() -> None:
    # Only the write of the answer may find the client gone: a ConnectionResetError raised while
    # a probe asks its backend is the probe's failure, answered 500, not a client that left.
    endpoint = MetricsEndpoint("127.0.0.1", 0)

    def failing_health(path: str) -> Any:
        raise ConnectionResetError("the backend reset the connection")

    endpoint.health = failing_health  # type: ignore[method-assign]
    endpoint.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/readyz", timeout=10)
        answer.value.close()
        assert answer.value.code == 500
    finally:
        endpoint.close()


# ------------------------------------------------------------------------------------ docs


def _blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_the_alert_rules_parse_and_name_only_real_metrics() -> None:
    import yaml

    [rules] = [yaml.safe_load(b) for b in _blocks("yaml") if "groups:" in b]
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    for needed in (
        "EventbusEventsDropped",
        "EventbusConsumerLagGrowing",
        "EventbusSinkDeadLettering",
        "EventbusWriterReconnecting",
    ):
        assert needed in alerts
    known = set()
    for metric in METRICS:
        base = metric.prometheus_name
        known |= {base, f"{base}_total", f"{base}_count", f"{base}_sum"}
    for name, expr in alerts.items():
        used = set(re.findall(r"\beventbus_[a-z_]+", expr))
        assert used and used <= known, (name, used - known)
    [pod] = [yaml.safe_load(b) for b in _blocks("yaml") if "readinessProbe" in b]
    probes = pod["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_fastapi_example_serves_eventbus_metrics(tmp_path: Path) -> None:
    [example] = [b for b in _blocks("python") if "make_asgi_app" in b]
    script = tmp_path / "app.py"
    script.write_text(
        example
        + "\nfrom starlette.testclient import TestClient\n"
        + "bus.publish(__import__('eventbus_core').Event(request_id='x'))\n"
        + "text = TestClient(app).get('/metrics/').text\n"
        + "assert 'eventbus_events_published_total 1.0' in text, text\n"
        + "bus.stop()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_a_backend_that_does_not_answer_holds_a_scrape_two_seconds_at_most() -> None:
    # A frozen Redis holds XINFO GROUPS for the client's socket timeout (10 s), once per lane:
    # the lanes are asked at once, the scrape waits backlog_timeout at most and leaves the
    # silent ones out, and the next scrape does not ask them again while they are still out.
    release = threading.Event()

    class Source:
        def __init__(self, answers: bool) -> None:
            self.answers = answers
            self.asked = 0

        def backlog(self) -> dict[str, int | None]:
            self.asked += 1
            if not self.answers:
                release.wait(30)
            return {"lag": 3, "pending": 1}

    class Watched:
        def __init__(self) -> None:
            # Eight silent lanes: asked one after another, even 0.3 s each would take 2.4 s.
            self.sources = {lane: Source(False) for lane in "abdefghi"}
            self.sources["c"] = Source(True)

        def stats(self) -> DispatcherStats:
            return DispatcherStats(sinks={}, lanes={lane: {} for lane in self.sources})

    dispatcher = Watched()
    reader = FiguresReader(dispatcher=dispatcher, backlog_timeout=0.3)
    try:
        started = time.monotonic()
        assert reader.read().backlog == {"c": {"lag": 3, "pending": 1}}
        assert time.monotonic() - started < 1.5  # all lanes at once: 0.3 s in all
        started = time.monotonic()
        assert reader.read().backlog == {"c": {"lag": 3, "pending": 1}}
        assert time.monotonic() - started < 1.5
        asked = {lane: s.asked for lane, s in dispatcher.sources.items()}
        assert asked == {**dict.fromkeys("abdefghi", 1), "c": 2}  # silent ones not again
        release.set()  # the server answers again: the next scrape asks every lane
        for lane in "abdefghi":
            for _ in range(100):
                if reader._asking[lane].done.is_set():
                    break
                time.sleep(0.01)
        assert set(reader.read().backlog) == set("abcdefghi")
    finally:
        release.set()


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each connection holds a thread: 20 idle ones held 20 threads for as long as they liked,
    # on a port open to every interface (trial 115).
    import socket
    import time

    from eventbus_core.metrics import _server

    monkeypatch.setattr(_server, "IDLE_TIMEOUT", 0.3)
    endpoint = MetricsEndpoint("127.0.0.1", 0)
    endpoint.start()
    try:
        idle = socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)
        half = socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        assert idle.recv(1024) == b"" and half.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 5
        idle.close()
        half.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/healthz", timeout=5) as r:
            assert r.status == 200  # still serving
    finally:
        endpoint.close()
