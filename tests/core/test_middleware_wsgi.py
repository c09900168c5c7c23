"""`EventBusWSGIMiddleware`: one event per request of a WSGI application, the application and
server unchanged (checked by `wsgiref.validate` on both sides of the middleware)."""

from __future__ import annotations

import io
import logging
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import FileWrapper, setup_testing_defaults
from wsgiref.validate import validator

import httpx
import pytest

from eventbus_core import Event, EventBusWSGIMiddleware
from eventbus_core.testing import RecordingBus
from eventbus_core.wsgi import Environ, StartResponse, WSGIApp

pytestmark = pytest.mark.timeout(30)

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def environ_for(
    path: str = "/v1/chat/completions",
    *,
    method: str = "POST",
    body: bytes = b"",
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Environ:
    environ: Environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    return environ


class Served:
    """What the server side of one call saw: status, headers, body, and whether it closed."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []
        self.body = b""
        self.result: Iterable[bytes] = ()


def call(
    app: WSGIApp,
    environ: Environ,
    *,
    validate: bool = True,
    take: int | None = None,
) -> Served:
    """Run `app` as a server would, with `validator` around it when `validate`: read the
    whole response (or only `take` chunks, then close, as on a client disconnect)."""
    served = Served()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        served.status = status
        served.headers = headers
        return served.written.append

    runner = validator(app) if validate else app
    with warnings.catch_warnings():
        # wsgiref.validate warns when a partly read response is closed: that is the point here.
        warnings.simplefilter("ignore")
        result = runner(environ, start_response)
        served.result = result
        chunks = []
        try:
            for chunk in result:
                chunks.append(chunk)
                if len(chunks) == take:
                    break
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    served.body = b"".join(served.written) + b"".join(chunks)
    return served


def observed(app: WSGIApp, bus: RecordingBus, **options: Any) -> WSGIApp:
    """`app` behind the middleware, each checked by `validator` (the middleware as a server
    for the app, and as an app for the server)."""
    return EventBusWSGIMiddleware(validator(app), bus, **options)


def chat_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("set-cookie", "session=s3cr3t"),
            ("x-upstream", "openai"),
        ],
    )
    return [b'{"echo": ' + str(len(body)).encode() + b"}"]


class TestEvent:
    def test_one_event_with_every_field(self) -> None:
        bus = RecordingBus()
        body = b'{"model": "gpt-4o", "messages": []}'
        served = call(observed(chat_app, bus), environ_for(body=body, query="stream=false&x=1"))
        assert served.status == "200 OK"
        assert served.body == b'{"echo": 35}'
        (event,) = bus.published
        assert event.method == "POST"
        assert event.path == "/v1/chat/completions?stream=false&x=1"
        assert event.status == 200
        assert event.duration_ns > 0
        assert event.request_body == body
        assert event.response_body == b'{"echo": 35}'
        assert UUID4.match(event.request_id)
        headers = dict(event.response_headers or {})
        # Go's canonical names; the cookie masked, other values as they were.
        assert headers["Set-Cookie"] == ("[REDACTED]",)
        assert headers["X-Upstream"] == ("openai",)
        assert headers["Content-Type"] == ("application/json",)

    def test_a_head_response_keeps_no_body(self) -> None:
        # The server sends no body for HEAD, whatever the application returns (gunicorn drops
        # it): the event held the 175 bytes the client never got (trial 254), unlike the ASGI
        # middleware's. The application's iterable is still read and closed by the server.
        bus = RecordingBus()
        served = call(observed(chat_app, bus), environ_for(method="HEAD"))
        assert served.body == b'{"echo": 0}'
        (event,) = bus.published
        assert (event.method, event.status, event.response_body) == ("HEAD", 200, None)

    def test_the_server_gets_the_applications_headers_unchanged(self) -> None:
        bus = RecordingBus()
        served = call(observed(chat_app, bus), environ_for())
        assert ("set-cookie", "session=s3cr3t") in served.headers
        assert all("X-Request-ID" not in name for name, _ in served.headers)

    def test_script_name_and_non_ascii_path(self) -> None:
        bus = RecordingBus()
        environ = environ_for("/caf\xc3\xa9")  # WSGI: the UTF-8 bytes, decoded as latin-1
        environ["SCRIPT_NAME"] = "/api"
        call(observed(chat_app, bus), environ)
        assert bus.published[0].path == "/api/café"

    def test_redact_off_and_extra_sensitive_headers(self) -> None:
        bus = RecordingBus()
        call(observed(chat_app, bus, redact=False), environ_for())
        call(observed(chat_app, bus, extra_sensitive_headers=["X-Upstream"]), environ_for())
        first, second = (dict(e.response_headers or {}) for e in bus.published)
        assert first["Set-Cookie"] == ("session=s3cr3t",)
        assert second["X-Upstream"] == ("[REDACTED]",)
        assert second["Set-Cookie"] == ("[REDACTED]",)

    def test_headers_named_like_credentials_are_masked_too(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/plain"),
                    ("X-Api-Secret", "S3cr3tV4l"),
                    ("X-Secretary", "k"),
                ],
            )
            return [b"ok"]

        bus = RecordingBus()
        call(observed(app, bus), environ_for(method="GET"))
        headers = dict(bus.published[0].response_headers or {})
        assert headers["X-Api-Secret"] == ("[REDACTED]",) and headers["X-Secretary"] == ("k",)

    def test_repeated_headers_are_kept_in_order(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response(
                "200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept"), ("Vary", "Origin")]
            )
            return [b""]

        bus = RecordingBus()
        call(observed(app, bus), environ_for(method="GET"))
        assert dict(bus.published[0].response_headers or {})["Vary"] == ("Accept", "Origin")


class TestBodies:
    def test_the_request_body_as_the_application_reads_it(self) -> None:
        lines = b"first line\nsecond line\nthird\n"

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            stream = environ["wsgi.input"]
            got = stream.readline() + stream.read(5) + b"".join(stream.readlines())
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [got]

        bus = RecordingBus()
        served = call(observed(app, bus), environ_for(body=lines))
        assert served.body == lines
        assert bus.published[0].request_body == lines

    def test_the_request_body_when_iterated(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            got = b"".join(environ["wsgi.input"])
            start_response("200 OK", [])
            return [got]

        bus = RecordingBus()
        # Iterating wsgi.input is not in wsgiref.validate's list: call the middleware directly.
        served = call(EventBusWSGIMiddleware(app, bus), environ_for(body=b"a\nb\n"), validate=False)
        assert served.body == b"a\nb\n"
        assert bus.published[0].request_body == b"a\nb\n"

    def test_the_request_body_read_with_readinto(self) -> None:
        """werkzeug (Flask) reads with `readinto` when the server's stream has it."""

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            stream = environ["wsgi.input"]
            assert hasattr(stream, "readinto")
            buffer = bytearray(8)
            got = b""
            while count := stream.readinto(buffer):
                got += bytes(buffer[:count])
            start_response("200 OK", [])
            return [got]

        bus = RecordingBus()
        body = b"0123456789abcdefghij"
        served = call(
            EventBusWSGIMiddleware(app, bus, max_request_body=12),
            environ_for(body=body),
            validate=False,
        )
        assert served.body == body
        assert bus.published[0].request_body == body[:12]

    def test_limits_keep_the_first_bytes_and_the_application_gets_all(self) -> None:
        body = b"x" * 100

        def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            got = environ["wsgi.input"].read(100)
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield got[:60]
            yield got[60:]

        bus = RecordingBus()
        served = call(
            observed(app, bus, max_request_body=10, max_response_body=70), environ_for(body=body)
        )
        assert served.body == body
        (event,) = bus.published
        assert event.request_body == b"x" * 10
        assert event.response_body == b"x" * 70

    def test_zero_limits_keep_no_body(self) -> None:
        seen: list[Any] = []

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            seen.append(environ["wsgi.input"])
            return chat_app(environ, start_response)

        bus = RecordingBus()
        environ = environ_for(body=b"abc")
        stream = environ["wsgi.input"]
        mw = EventBusWSGIMiddleware(app, bus, max_request_body=0, max_response_body=0)
        call(mw, environ, validate=False)
        (event,) = bus.published
        assert event.request_body is None
        assert event.response_body is None
        assert seen == [stream]  # not even wrapped

    def test_the_write_callable_is_observed(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"legacy ")
            return [b"and iterable"]

        bus = RecordingBus()
        served = call(observed(app, bus), environ_for(method="GET"))
        assert served.body == b"legacy and iterable"
        assert bus.published[0].response_body == b"legacy and iterable"

    def test_a_generator_that_starts_the_response_late(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            start_response("201 Created", [("Content-Type", "text/event-stream")])
            for i in range(3):
                yield f"data: {i}\n\n".encode()

        bus = RecordingBus()
        served = call(observed(app, bus), environ_for(method="GET"))
        (event,) = bus.published
        assert event.status == 201
        assert event.response_body == served.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"

    def test_a_list_response_keeps_its_length(self) -> None:
        """Servers size a one-chunk list response from len(): the wrapper reports it."""
        bus = RecordingBus()
        app = EventBusWSGIMiddleware(chat_app, bus)
        served = call(app, environ_for(), validate=False)
        assert len(served.result) == 1  # type: ignore[arg-type]

        def gen_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            start_response("200 OK", [])
            yield b"x"

        served = call(EventBusWSGIMiddleware(gen_app, bus), environ_for(), validate=False)
        assert not hasattr(served.result, "__len__")


class TestEndings:
    def test_a_closed_response_publishes_what_was_sent_and_closes_the_app(self) -> None:
        closed = []

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"one "
                yield b"two "
                yield b"three"

            def close(self) -> None:
                closed.append(True)

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Body()

        bus = RecordingBus()
        call(observed(app, bus), environ_for(method="GET"), take=1)
        assert closed == [True]
        (event,) = bus.published
        assert event.response_body == b"one "
        assert event.status == 200

    def test_an_application_raising_before_starting_is_a_500(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            raise RuntimeError("boom")

        bus = RecordingBus()
        with pytest.raises(RuntimeError, match="boom"):
            call(EventBusWSGIMiddleware(app, bus), environ_for(), validate=False)
        (event,) = bus.published
        assert event.status == 500
        assert UUID4.match(event.request_id)

    def test_raising_before_any_body_is_a_500_after_it_the_status_sent(self) -> None:
        def late(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            start_response("200 OK", [])
            yield b"part"
            raise RuntimeError("mid-stream")

        def empty_first(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            start_response("200 OK", [])
            yield b""  # gunicorn and wsgiref send the headers with it (Flask's idiom)
            raise RuntimeError("after the headers")

        def early(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [])
            raise RuntimeError("before the body")

        bus = RecordingBus()
        for app in (late, empty_first, early):
            with pytest.raises(RuntimeError):
                call(EventBusWSGIMiddleware(app, bus), environ_for(), validate=False)
        sent, sent_empty, unsent = bus.published
        assert (sent.status, sent.response_body) == (200, b"part")
        assert (sent_empty.status, sent_empty.response_body) == (200, None)
        assert (unsent.status, unsent.response_body) == (500, None)
        # The server's error page went out with its own headers, not the application's.
        assert sent.response_headers is not None and unsent.response_headers is None

    def test_exc_info_after_the_body_started_keeps_the_status_sent(self) -> None:
        # The server re-raises exc_info once headers are out (PEP 3333): the client has 200
        # and part of the body. The event said 500.
        def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"part"
            try:
                raise ValueError("late")
            except ValueError as exc:
                start_response("500 Internal Server Error", [], (type(exc), exc, exc.__traceback__))
            yield b"never sent"

        out: list[bytes] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            if exc_info is not None and out:
                raise exc_info[1].with_traceback(exc_info[2])
            return out.append

        bus = RecordingBus()
        result = EventBusWSGIMiddleware(app, bus)(environ_for(method="GET"), start_response)
        with pytest.raises(ValueError, match="late"):
            out.extend(result)
        result.close()  # type: ignore[attr-defined]
        (event,) = bus.published
        assert (event.status, event.response_body) == (200, b"part")
        assert event.header("content-type") == "text/plain"

    def test_start_response_again_with_exc_info_replaces_the_status(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("late failure")
            except ValueError as exc:
                start_response(
                    "503 Service Unavailable",
                    [("Content-Type", "text/plain")],
                    (type(exc), exc, exc.__traceback__),
                )
            return [b"unavailable"]

        bus = RecordingBus()
        served = call(observed(app, bus), environ_for(method="GET"))
        assert served.status.startswith("503")
        assert bus.published[0].status == 503

    def test_a_file_wrapper_goes_to_the_server_untouched(self) -> None:
        wrapped: list[Any] = []

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            body = environ["wsgi.file_wrapper"](io.BytesIO(b"file bytes"))
            wrapped.append(body)
            return body  # type: ignore[no-any-return]

        bus = RecordingBus()
        environ = environ_for(method="GET")
        environ["wsgi.file_wrapper"] = FileWrapper
        served = call(EventBusWSGIMiddleware(app, bus), environ, validate=False)
        assert served.result is wrapped[0]
        assert served.body == b"file bytes"
        (event,) = bus.published
        assert (event.status, event.response_body) == (200, None)


class TestOptions:
    def test_request_id_from_the_request_then_the_response(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response(
                "200 OK", [("Content-Type", "text/plain"), ("X-Request-ID", "from-response")]
            )
            return [b""]

        bus = RecordingBus()
        call(observed(app, bus), environ_for(headers={"X-Request-ID": "from-request"}))
        call(observed(app, bus), environ_for())
        assert [e.request_id for e in bus.published] == ["from-request", "from-response"]

    def test_a_custom_request_id_header_and_factory(self) -> None:
        bus = RecordingBus()
        mw = observed(
            chat_app,
            bus,
            request_id_header="X-Correlation-Id",
            request_id_factory=lambda: uuid.UUID(int=7),
        )
        call(mw, environ_for(headers={"X-Correlation-Id": "corr-1"}))
        call(mw, environ_for())
        assert [e.request_id for e in bus.published] == ["corr-1", str(uuid.UUID(int=7))]

    def test_set_request_id_adds_the_header_to_a_copy(self) -> None:
        app_headers: list[list[tuple[str, str]]] = []

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            headers = [("Content-Type", "text/plain")]
            app_headers.append(headers)
            start_response("200 OK", headers)
            return [b"ok"]

        bus = RecordingBus()
        served = call(observed(app, bus, set_request_id=True), environ_for())
        (event,) = bus.published
        assert ("X-Request-ID", event.request_id) in served.headers
        assert dict(event.response_headers or {})["X-Request-Id"] == (event.request_id,)
        assert app_headers == [[("Content-Type", "text/plain")]]

    def test_excluded_paths_and_cache_hits_publish_nothing(self) -> None:
        def cached(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Proxy-Cache", " HIT ")])
            return [b"cached"]

        bus = RecordingBus()
        app = observed(chat_app, bus, exclude_paths=["/health", "/metrics/*"])
        for path in ("/health", "/metrics/", "/metrics/x"):
            assert call(app, environ_for(path, method="GET")).status == "200 OK"
        call(observed(cached, bus), environ_for())
        bus.assert_nothing_published()
        call(app, environ_for("/healthz", method="GET"))
        call(observed(cached, bus, skip_cache_hits=False), environ_for())
        assert [e.path for e in bus.published] == ["/healthz", "/v1/chat/completions"]

    def test_excluded_paths_match_the_path_within_a_mounted_app(self) -> None:
        # Mounted at /api (SCRIPT_NAME), exclude_paths=["/health"] missed /api/health (trial 215).
        bus = RecordingBus()
        app = observed(chat_app, bus, exclude_paths=["/health"])
        for script_name, path_info in (("/api", "/health"), ("", "/api/health"), ("/api", "/x")):
            environ = {**environ_for(path_info, method="GET"), "SCRIPT_NAME": script_name}
            call(app, environ)
        assert [e.path for e in bus.published] == ["/api/health", "/api/x"]

    @pytest.mark.parametrize("option", ["max_request_body", "max_response_body"])
    @pytest.mark.parametrize("value", [-1, 1.5, True])
    def test_bad_limits_are_refused(self, option: str, value: Any) -> None:
        with pytest.raises(ValueError, match=f"{option} must be an int >= 0"):
            EventBusWSGIMiddleware(chat_app, RecordingBus(), **{option: value})


class TestFailures:
    def test_a_failing_bus_never_reaches_the_request(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken:
            def publish(self, event: Event) -> None:
                raise OSError("bus is down")

        mw = EventBusWSGIMiddleware(chat_app, Broken())
        with caplog.at_level(logging.DEBUG, logger="eventbus.middleware"):
            for _ in range(3):
                assert call(mw, environ_for()).body == b'{"echo": 0}'
        assert mw.errors == 3
        logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(logged) == 1
        assert "publishing the event failed; the request is unaffected" in logged[0].getMessage()

    def test_a_bad_status_line_is_the_servers_problem_not_ours(self) -> None:
        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            start_response("OK", [])
            return [b""]

        seen: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append(status)
            return lambda data: None

        mw = EventBusWSGIMiddleware(app, RecordingBus())
        list(mw(environ_for(), start_response))
        assert seen == ["OK"]  # handed on as it was
        assert mw.errors == 1


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_wsgi(app: WSGIApp) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}", stop


def test_behind_a_real_wsgi_server() -> None:
    """wsgiref's server: Content-Length still set from the one-chunk list, bodies recorded."""
    bus = RecordingBus()
    base, stop = serve_wsgi(EventBusWSGIMiddleware(chat_app, bus))
    try:
        with httpx.Client(base_url=base) as client:
            response = client.post(
                "/v1/chat/completions?a=1", content=b"hello", headers={"X-Request-ID": "r-1"}
            )
    finally:
        stop()
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(b'{"echo": 5}'))
    (event,) = bus.published
    assert (event.request_id, event.path, event.request_body) == (
        "r-1",
        "/v1/chat/completions?a=1",
        b"hello",
    )
    assert event.response_body == response.content


class TestBadInput:
    """Both middleware share these checks (`_request_observer`): a mistake is refused when the
    middleware is made, naming the argument, instead of losing or exposing events later."""

    @pytest.fixture(params=["wsgi", "asgi"])
    def make(self, request: pytest.FixtureRequest) -> Callable[..., Any]:
        from eventbus_core import EventBusMiddleware

        cls = EventBusWSGIMiddleware if request.param == "wsgi" else EventBusMiddleware
        return lambda bus=None, **options: cls(chat_app, bus or RecordingBus(), **options)  # type: ignore[arg-type]

    @pytest.mark.parametrize("option", ["exclude_paths", "extra_sensitive_headers"])
    def test_one_string_for_a_list_is_refused(self, make: Callable[..., Any], option: str) -> None:
        with pytest.raises(TypeError, match=rf"{option} must be a list of str, not one string"):
            make(**{option: "/health" if option == "exclude_paths" else "X-Secret"})

    @pytest.mark.parametrize("option", ["exclude_paths", "extra_sensitive_headers"])
    def test_none_for_a_list_is_refused(self, make: Callable[..., Any], option: str) -> None:
        with pytest.raises(TypeError, match=rf"{option} must be a list of str \(empty: none\)"):
            make(**{option: None})

    @pytest.mark.parametrize("flag", ["redact", "skip_cache_hits", "set_request_id"])
    def test_flags_must_be_bools(self, make: Callable[..., Any], flag: str) -> None:
        with pytest.raises(TypeError, match=rf"{flag} must be True or False, got 'no'"):
            make(**{flag: "no"})

    def test_non_str_entries_are_refused(self, make: Callable[..., Any]) -> None:
        with pytest.raises(TypeError, match="exclude_paths must hold str, got None"):
            make(exclude_paths=[None])
        with pytest.raises(TypeError, match="extra_sensitive_headers must hold str, got b'x'"):
            make(extra_sensitive_headers=[b"x"])

    def test_a_path_without_its_slash_is_refused(self, make: Callable[..., Any]) -> None:
        with pytest.raises(
            ValueError, match=r"'health' would never match \(did you mean '/health'"
        ):
            make(exclude_paths=["health"])

    @pytest.mark.parametrize("bus", [object(), "redis"])
    def test_a_bus_without_publish_is_refused(self, make: Callable[..., Any], bus: Any) -> None:
        with pytest.raises(TypeError, match="bus must have a publish\\(event\\) method"):
            make(bus)

    @pytest.mark.parametrize("header", [None, "", "  ", "Bad Header", "X-Id:"])
    def test_a_request_id_header_must_be_a_name(
        self, make: Callable[..., Any], header: Any
    ) -> None:
        with pytest.raises(TypeError, match="request_id_header must be a header name"):
            make(request_id_header=header)

    def test_a_request_id_factory_must_be_callable(self, make: Callable[..., Any]) -> None:
        with pytest.raises(TypeError, match="request_id_factory must be a callable"):
            make(request_id_factory="uuid4")

    @pytest.mark.parametrize("header", ["", "  "])
    def test_an_extra_sensitive_header_must_be_a_name(
        self, make: Callable[..., Any], header: str
    ) -> None:
        # It could never match, so the header it was meant to mask would go out as it is.
        with pytest.raises(TypeError, match="extra_sensitive_headers must hold header names"):
            make(extra_sensitive_headers=["X-Api-Key", header])

    @pytest.mark.parametrize("kind", ["wsgi", "asgi"])
    @pytest.mark.parametrize("app", [None, "notanapp"])
    def test_the_app_must_be_callable(self, kind: str, app: Any) -> None:
        from eventbus_core import EventBusMiddleware

        cls = EventBusWSGIMiddleware if kind == "wsgi" else EventBusMiddleware
        with pytest.raises(TypeError, match=f"app must be the {kind.upper()} application"):
            cls(app, RecordingBus())


def test_a_request_id_factory_returning_bytes_gives_their_text() -> None:
    # str(b"...") made the id "b'bytes-id'", sent to the client as it was.
    bus = RecordingBus()
    call(
        EventBusWSGIMiddleware(chat_app, bus, request_id_factory=lambda: b"bytes-id"), environ_for()
    )
    assert bus.published[0].request_id == "bytes-id"


def test_a_failing_request_id_factory_still_gives_each_request_its_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def factory() -> str:
        raise RuntimeError("no ids today")

    bus = RecordingBus()
    mw = EventBusWSGIMiddleware(chat_app, bus, request_id_factory=factory)
    with caplog.at_level(logging.ERROR, logger="eventbus.middleware"):
        for _ in range(2):
            call(mw, environ_for())
    assert [bool(UUID4.match(e.request_id)) for e in bus.published] == [True, True]
    assert mw.errors == 2  # one per request, not one per place that needed the id
    (logged,) = caplog.records
    assert "request_id_factory failed" in logged.getMessage()


@pytest.mark.parametrize("made", ["", None, "id\r\nX-Injected: 1"])
def test_an_id_from_the_factory_that_cannot_be_a_header_is_replaced_and_counted(
    made: Any,
) -> None:
    bus = RecordingBus()
    mw = EventBusWSGIMiddleware(chat_app, bus, request_id_factory=lambda: made)
    call(mw, environ_for())
    assert UUID4.match(bus.published[0].request_id)
    assert mw.errors == 1


class TestStopBuses:
    def test_stops_each_bus_of_every_middleware_once_wherever_it_is_kept(self) -> None:
        from eventbus_core.wsgi import stop_buses

        class Framework:
            """Keeps the middleware where Flask does: in `wsgi_app`."""

            def __init__(self) -> None:
                self.wsgi_app: Any = chat_app

        shared, other = RecordingBus(), RecordingBus()
        stops: list[RecordingBus] = []
        for bus in (shared, other):
            original = bus.stop
            bus.stop = lambda timeout=None, bus=bus, original=original: (  # type: ignore[method-assign]
                stops.append(bus),
                original(timeout),
            )[1]
        flask_like = Framework()
        flask_like.wsgi_app = EventBusWSGIMiddleware(flask_like.wsgi_app, shared)
        django_like = EventBusWSGIMiddleware(chat_app, shared)
        third = EventBusWSGIMiddleware(chat_app, other)
        assert stop_buses() >= 2
        assert stops.count(shared) == 1
        assert stops.count(other) == 1
        del flask_like, django_like, third

    def test_the_buses_stop_side_by_side(self) -> None:
        """Each stop() waits for the other to have begun: one after the other, neither would
        (the barrier breaks), and the hook would take the sum of the buses' stop timeouts."""
        from eventbus_core.wsgi import stop_buses

        both = threading.Barrier(2, timeout=10)

        class Slow(RecordingBus):
            def stop(self, timeout: float | None = None) -> None:
                both.wait()
                super().stop(timeout)

        first, second = Slow(), Slow()
        keep = [EventBusWSGIMiddleware(chat_app, first), EventBusWSGIMiddleware(chat_app, second)]
        assert stop_buses() >= 2
        assert not both.broken
        for bus in (first, second):
            bus.publish(Event(request_id="late", method="GET", path="/", status=200))
            assert bus.stats().dropped == 1  # stopped
        del keep

    def test_a_bus_that_fails_to_stop_does_not_keep_the_others_running(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        from eventbus_core.wsgi import stop_buses

        class Stubborn:
            def publish(self, event: Event) -> None:
                pass

            def stop(self, timeout: float | None = None) -> None:
                raise OSError("cannot stop")

        fine = RecordingBus()
        keep = [
            EventBusWSGIMiddleware(chat_app, Stubborn()),
            EventBusWSGIMiddleware(chat_app, fine),
        ]
        with caplog.at_level(logging.ERROR, logger="eventbus.middleware"):
            stop_buses(1.0)
        assert "stopping Stubborn failed" in caplog.text
        fine.publish(Event(request_id="late", method="GET", path="/", status=200))
        assert fine.stats().dropped == 1  # it was stopped
        del keep
