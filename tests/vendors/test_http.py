"""The shared vendor HTTP layer, over a real loopback server that plays scripted replies.

Nothing in `requests` is patched: retries, resets and timeouts go through the real
transport. Sleeps and the token clock are injected, so no test waits for backoff.
"""

from __future__ import annotations

import email.utils
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from consumer.runtime.metrics import REGISTRY
from consumer.vendors.base import PermanentVendorError, RetryableVendorError, VendorAuthError
from consumer.vendors.http import (
    RetryPolicy,
    TokenAuth,
    VendorHttp,
    call_outcome,
    is_retryable,
    never_processed,
    retry_after_seconds,
    retry_delay,
    vendor_error_summary,
)
from consumer.vendors.http_watchdog import WATCHDOG, Watchdog
from tests.support.clock import ManualClock
from tests.support.waiting import wait_until
from tests.vendors.harness import vendor_calls

VENDOR = "http_test"


# --------------------------------------------------------------------------- scripted server


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = ()
    reset: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    replies: deque[Reply] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        script = self.server.script
        headers = {name.lower(): value for name, value in self.headers.items()}
        script.seen.append(Seen(self.command, self.path, headers, body))
        reply = script.replies.popleft() if script.replies else Reply()
        if reply.delay:
            script.stopping.wait(reply.delay)
        if reply.reset:
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        self.script = script
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    httpd = _Server(script)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        script.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@dataclass
class Harness:
    base_url: str
    script: Script
    http: VendorHttp
    sleeps: list[float]

    def reply(self, *replies: Reply) -> None:
        self.script.replies.extend(replies)

    @property
    def seen(self) -> list[Seen]:
        return self.script.seen


@pytest.fixture
def harness(server: tuple[str, Script]) -> Iterator[Harness]:
    sleeps: list[float] = []
    http = VendorHttp(VENDOR, timeout_seconds=2.0, sleep=sleeps.append, rand=lambda: 0.5)
    try:
        yield Harness(server[0], server[1], http, sleeps)
    finally:
        http.close()


def calls(operation: str, outcome: str) -> float:
    return vendor_calls(VENDOR, operation, outcome)


def durations(operation: str) -> float:
    labels = {"vendor": VENDOR, "operation": operation}
    return REGISTRY.get_sample_value("erasure_vendor_call_duration_seconds_count", labels) or 0.0


def response(
    status: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> requests.Response:
    built = requests.Response()
    built.status_code = status
    built.headers.update(headers or {})
    built._content = body
    return built


def free_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-listens"


def transport_error(send: Callable[[], object]) -> requests.RequestException:
    try:
        send()
    except requests.RequestException as error:
        return error
    raise AssertionError("expected a transport error")


# --------------------------------------------------------------------------- the decisions


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_gateway_server_and_rate_limit_statuses_are_retryable(status: int) -> None:
    assert is_retryable(response(status))


@pytest.mark.parametrize("status", [200, 303, 400, 401, 403, 404, 409, 413, 422, 501])
def test_other_statuses_are_not_retryable(status: int) -> None:
    assert not is_retryable(response(status))


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (requests.ConnectionError(), True),
        (requests.ReadTimeout(), True),
        (requests.ConnectTimeout(), True),
        (requests.exceptions.ChunkedEncodingError(), True),
        (requests.exceptions.InvalidURL(), False),
    ],
)
def test_transport_errors(error: requests.RequestException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


@pytest.mark.parametrize(
    ("status", "expected"), [(429, True), (503, True), (500, False), (502, False), (504, False)]
)
def test_only_429_and_503_prove_a_post_was_not_processed(status: int, expected: bool) -> None:
    assert never_processed(response(status)) is expected


def test_refused_connection_was_never_processed() -> None:
    refused = transport_error(lambda: requests.post(free_port_url(), timeout=1))
    assert isinstance(refused, requests.ConnectionError)
    assert never_processed(refused)
    assert never_processed(requests.ConnectTimeout())


def test_reset_or_read_timeout_after_sending_may_have_been_processed(
    server: tuple[str, Script],
) -> None:
    base_url, script = server
    script.replies.extend([Reply(reset=True), Reply(delay=1.0)])
    reset = transport_error(lambda: requests.post(base_url, data=b"x", timeout=2))
    timed_out = transport_error(lambda: requests.post(base_url, data=b"x", timeout=0.1))
    assert isinstance(reset, requests.ConnectionError)
    assert isinstance(timed_out, requests.ReadTimeout)
    assert not never_processed(reset)
    assert not never_processed(timed_out)


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (response(200), "ok"),
        (response(303), "ok"),
        (response(404), "client_error"),
        (response(401), "client_error"),
        (response(429), "rate_limited"),
        (response(502), "server_error"),
        (requests.ReadTimeout(), "timeout"),
        (requests.ConnectTimeout(), "timeout"),
        (requests.ConnectionError(), "connection_error"),
    ],
)
def test_call_outcome_labels(
    result: requests.Response | requests.RequestException, outcome: str
) -> None:
    assert call_outcome(result) == outcome


def test_retry_after_in_seconds_and_as_http_date() -> None:
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    long_ago = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_seconds(response(429, {"Retry-After": "7"})) == 7.0
    assert 8.0 <= (retry_after_seconds(response(429, {"Retry-After": in_ten})) or 0.0) <= 10.0
    assert retry_after_seconds(response(503, {"Retry-After": long_ago})) == 0.0
    assert retry_after_seconds(response(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(response(429)) is None


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    policy = RetryPolicy(attempts=10, base_seconds=0.5, cap_seconds=10.0)
    assert [retry_delay(n, None, policy, lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 8, 10]
    assert retry_delay(3, None, policy, lambda: 0.0) == 0.0
    assert retry_delay(0, 3.0, policy, lambda: 0.0) == 3.0
    assert retry_delay(0, 60.0, policy, lambda: 0.0) == 10.0


@given(
    retry=st.integers(min_value=0, max_value=64),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e6),
    base=st.floats(min_value=0.001, max_value=60),
    cap=st.floats(min_value=0.001, max_value=600),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_is_within_cap_and_honours_retry_after(
    retry: int, retry_after: float | None, base: float, cap: float, jitter: float
) -> None:
    policy = RetryPolicy(attempts=3, base_seconds=base, cap_seconds=cap)
    delay = retry_delay(retry, retry_after, policy, lambda: jitter)
    assert 0.0 <= delay <= cap
    if retry_after is not None and retry_after <= cap:
        assert delay >= retry_after


def test_error_summary_names_safe_fields_and_masks_personal_data() -> None:
    body = json.dumps(
        {"error": "invalid_request", "error_description": "bad id 4711-X for jane@example.com"}
    ).encode()
    summary = vendor_error_summary(response(400, body=body), redact=["4711-x"])
    assert summary == "invalid_request: bad id <redacted> for <redacted>"
    meta = json.dumps({"meta": {"generalErrors": ["database not found"]}, "data": None}).encode()
    assert vendor_error_summary(response(404, body=meta)) == "database not found"
    assert vendor_error_summary(response(500, body=b"<html>oops</html>")) is None
    unsafe_code = json.dumps({"errorCode": "jane@example.com"}).encode()
    assert vendor_error_summary(response(400, body=unsafe_code)) is None


# --------------------------------------------------------------------------- VendorHttp


def test_get_retries_server_errors_with_backoff_and_counts_every_call(harness: Harness) -> None:
    harness.reply(Reply(503), Reply(502), Reply(200, b'{"ok": true}'))
    errors, oks, timed = calls("poll", "server_error"), calls("poll", "ok"), durations("poll")
    answer = harness.http.call("poll", "GET", f"{harness.base_url}/jobs/1")
    assert answer.json() == {"ok": True}
    assert len(harness.seen) == 3
    assert harness.sleeps == [0.25, 0.5]
    assert calls("poll", "server_error") - errors == 2
    assert calls("poll", "ok") - oks == 1
    assert durations("poll") - timed == 3


def test_get_gives_up_after_the_policy_attempts(harness: Harness) -> None:
    harness.reply(Reply(500), Reply(500), Reply(500), Reply(200))
    with pytest.raises(RetryableVendorError, match=r"http_test poll: HTTP 500"):
        harness.http.call("poll", "GET", f"{harness.base_url}/jobs/1")
    assert len(harness.seen) == 3


@pytest.mark.parametrize("status", [500, 502, 504])
def test_post_that_may_have_been_processed_is_not_resent(harness: Harness, status: int) -> None:
    harness.reply(Reply(status), Reply(202))
    with pytest.raises(RetryableVendorError):
        harness.http.call("submit", "POST", f"{harness.base_url}/submit", data=b"x")
    assert len(harness.seen) == 1
    assert harness.sleeps == []


def test_post_rate_limited_waits_retry_after_and_is_resent(harness: Harness) -> None:
    harness.reply(Reply(429, headers=(("Retry-After", "2"),)), Reply(202))
    limited = calls("submit", "rate_limited")
    answer = harness.http.call("submit", "POST", f"{harness.base_url}/submit", data=b"x")
    assert answer.status_code == 202
    assert harness.sleeps == [2.0]
    assert [seen.body for seen in harness.seen] == [b"x", b"x"]
    assert calls("submit", "rate_limited") - limited == 1


def test_retry_after_beyond_the_cap_goes_back_to_the_dispatcher(harness: Harness) -> None:
    harness.reply(Reply(503, headers=(("Retry-After", "3600"),)))
    with pytest.raises(RetryableVendorError) as raised:
        harness.http.call("submit", "POST", f"{harness.base_url}/submit", data=b"x")
    assert raised.value.retry_after == 3600.0
    assert harness.sleeps == []
    assert len(harness.seen) == 1


def test_post_to_a_closed_port_is_retried_then_retryable() -> None:
    sleeps: list[float] = []
    http = VendorHttp(VENDOR, timeout_seconds=1.0, sleep=sleeps.append, rand=lambda: 1.0)
    before = calls("submit", "connection_error")
    with http, pytest.raises(RetryableVendorError, match="connection failed"):
        http.call("submit", "POST", free_port_url(), data=b"x")
    assert sleeps == [0.5, 1.0]
    assert calls("submit", "connection_error") - before == 3


def test_post_reset_after_sending_is_not_resent(harness: Harness) -> None:
    harness.reply(Reply(reset=True), Reply(202))
    before = calls("submit", "connection_error")
    with pytest.raises(RetryableVendorError, match="connection failed"):
        harness.http.call("submit", "POST", f"{harness.base_url}/submit", data=b"x")
    assert len(harness.seen) == 1
    assert calls("submit", "connection_error") - before == 1


def test_get_reset_is_retried(harness: Harness) -> None:
    harness.reply(Reply(reset=True), Reply(200))
    assert harness.http.call("poll", "GET", f"{harness.base_url}/jobs/1").status_code == 200
    assert len(harness.seen) == 2


def test_slow_answers_time_out_get_retried_post_handed_back(server: tuple[str, Script]) -> None:
    base_url, script = server
    sleeps: list[float] = []
    http = VendorHttp(VENDOR, timeout_seconds=0.2, sleep=sleeps.append)
    script.replies.extend([Reply(delay=2.0), Reply(200), Reply(delay=2.0), Reply(202)])
    before = calls("poll", "timeout")
    with http:
        assert http.call("poll", "GET", f"{base_url}/jobs/1").status_code == 200
        assert calls("poll", "timeout") - before == 1
        with pytest.raises(RetryableVendorError, match=r"no answer within 0.2s"):
            http.call("submit", "POST", f"{base_url}/submit", data=b"x")
    assert len(script.seen) == 3


def test_client_errors_are_permanent_and_never_echo_sent_values(harness: Harness) -> None:
    body = json.dumps({"error": "invalid_request", "error_description": "bad value s3cr3t-id"})
    harness.reply(Reply(400, body.encode()))
    with pytest.raises(PermanentVendorError) as raised:
        harness.http.call(
            "submit", "POST", f"{harness.base_url}/x", data=b"x", redact=["s3cr3t-id"]
        )
    message = str(raised.value)
    assert message == "http_test submit: HTTP 400 (invalid_request: bad value <redacted>)"
    assert raised.value.__cause__ is None
    assert len(harness.seen) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_auth_errors(harness: Harness, status: int) -> None:
    harness.reply(Reply(status))
    with pytest.raises(VendorAuthError, match=f"HTTP {status}"):
        harness.http.call("poll", "GET", f"{harness.base_url}/jobs/1")


def test_any_rejected_token_request_is_an_auth_error(harness: Harness) -> None:
    harness.reply(Reply(400, b'{"error": "invalid_grant"}'))
    with pytest.raises(VendorAuthError, match="invalid_grant"):
        harness.http.call("auth", "POST", f"{harness.base_url}/oauth/token", data={"a": "b"})


def test_handled_statuses_and_redirects_are_returned_not_followed(harness: Harness) -> None:
    elsewhere = (("Location", f"{harness.base_url}/elsewhere"),)
    harness.reply(Reply(404), Reply(303, headers=elsewhere), Reply(302, headers=elsewhere))
    url = f"{harness.base_url}/jobs/1"
    assert harness.http.call("poll", "GET", url, handled_statuses=(404,)).status_code == 404
    assert harness.http.call("poll", "GET", url, handled_statuses=(303,)).status_code == 303
    with pytest.raises(RetryableVendorError, match="HTTP 302: redirect not followed"):
        harness.http.call("poll", "GET", url)
    assert [seen.path for seen in harness.seen] == ["/jobs/1", "/jobs/1", "/jobs/1"]


def test_sends_a_user_agent_and_the_request_parts(harness: Harness) -> None:
    harness.http.call(
        "submit",
        "POST",
        f"{harness.base_url}/submit",
        params={"key": "a b"},
        data=b"body",
        headers={"Content-Type": "text/csv;charset=UTF-8"},
    )
    harness.http.call("submit", "POST", f"{harness.base_url}/rows", json={"ids": ["é"]})
    csv_post, json_post = harness.seen
    assert csv_post.headers["user-agent"].startswith("erasure-worker/")
    assert csv_post.headers["content-type"] == "text/csv;charset=UTF-8"
    assert (csv_post.path, csv_post.body) == ("/submit?key=a+b", b"body")
    assert json_post.headers["content-type"] == "application/json"
    assert json.loads(json_post.body) == {"ids": ["é"]}


# --------------------------------------------------------------------------- tokens


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenSource:
    """Hands out token-1, token-2, ... each valid for `ttl` seconds."""

    def __init__(self, ttl: float = 3600.0) -> None:
        self.ttl = ttl
        self.issued: list[str] = []

    def __call__(self) -> tuple[str, float]:
        self.issued.append(f"token-{len(self.issued) + 1}")
        return self.issued[-1], self.ttl


def test_token_is_reused_until_shortly_before_expiry() -> None:
    clock, source = FakeClock(), TokenSource(ttl=3600.0)
    auth = TokenAuth(source, clock=clock, refresh_margin_seconds=60.0)
    assert auth.token() == "token-1"
    clock.now += 3539.0
    assert auth.token() == "token-1"
    clock.now += 1.0
    assert auth.token() == "token-2"
    auth.invalidate()
    assert auth.token() == "token-3"


def test_short_lived_tokens_are_kept_for_half_their_life() -> None:
    clock, source = FakeClock(), TokenSource(ttl=10.0)
    auth = TokenAuth(source, clock=clock, refresh_margin_seconds=60.0)
    auth.token()
    clock.now += 4.9
    assert auth.token() == "token-1"
    clock.now += 0.1
    assert auth.token() == "token-2"


def test_bearer_header_and_one_refresh_on_401(harness: Harness) -> None:
    source = TokenSource()
    auth = TokenAuth(source, clock=FakeClock())
    harness.reply(Reply(401), Reply(200))
    harness.http.call("poll", "GET", f"{harness.base_url}/jobs/1", auth=auth)
    assert [seen.headers["authorization"] for seen in harness.seen] == [
        "Bearer token-1",
        "Bearer token-2",
    ]
    assert harness.sleeps == []


def test_a_second_401_is_an_auth_error(harness: Harness) -> None:
    source = TokenSource()
    auth = TokenAuth(source, scheme="Token", clock=FakeClock())
    harness.reply(Reply(401), Reply(401), Reply(200))
    with pytest.raises(VendorAuthError, match="HTTP 401"):
        harness.http.call("submit", "POST", f"{harness.base_url}/s", data=b"x", auth=auth)
    assert source.issued == ["token-1", "token-2"]
    assert harness.seen[1].headers["authorization"] == "Token token-2"


def test_token_fetch_failure_propagates_without_calling(harness: Harness) -> None:
    def refuse() -> tuple[str, float]:
        raise VendorAuthError("refused")

    with pytest.raises(VendorAuthError, match="refused"):
        harness.http.call("poll", "GET", f"{harness.base_url}/jobs/1", auth=TokenAuth(refuse))
    assert harness.seen == []


# --------------------------------------------------------------------------- deadlines, environment


class Fired:
    """Records when each alarm's action ran, by the clock the watchdog reads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.at: dict[int, float] = {}
        self.order: list[int] = []
        self.lock = threading.Lock()
        self.clock = clock

    def action(self, number: int) -> Callable[[], None]:
        def fire() -> None:
            with self.lock:
                self.at[number] = self.clock()
                self.order.append(number)

        return fire

    def count(self) -> int:
        with self.lock:
            return len(self.at)


def test_one_watchdog_fires_many_concurrent_deadlines_in_order_never_early() -> None:
    # A still clock moved by the test: no alarm falls due while others are still being
    # scheduled, however slow the machine, so order and earliness are exact.
    clock = ManualClock()
    watchdog, fired = Watchdog(clock.monotonic), Fired(clock.monotonic)
    threads_before = threading.active_count()
    offsets = [0.05 + (number * 37 % 300) / 2000 for number in range(300)]  # shuffled, 0.5 ms apart
    due = [clock.monotonic() + offset for offset in offsets]
    for number, offset in enumerate(offsets):
        watchdog.schedule(offset, fired.action(number))
    assert threading.active_count() - threads_before <= 1  # the watchdog's one thread
    for step in (0.1, 0.1, 0.1):
        clock.advance(step)
        now = clock.monotonic()
        expected = sum(at <= now for at in due)
        wait_until(lambda: fired.count() >= expected, timeout=10, message="due alarms fired")  # noqa: B023
        assert fired.count() == expected  # none before its time
    assert all(fired.at[number] >= at for number, at in enumerate(due))
    assert fired.order == sorted(range(len(due)), key=due.__getitem__)
    assert watchdog.pending() == 0


def test_a_cancelled_deadline_never_fires_even_after_many_cancellations() -> None:
    # The watchdog's clock stands still while alarms are scheduled and cancelled, so none can
    # fall due before its cancellation however slow the machine; then it jumps past them all.
    clock = ManualClock()
    watchdog, fired = Watchdog(clock.monotonic), Fired(clock.monotonic)
    alarms = [watchdog.schedule(0.05, fired.action(number)) for number in range(200)]
    # Far-off alarms cancelled in bulk make the heap rebuild itself without them.
    far = [watchdog.schedule(600.0, fired.action(1000 + number)) for number in range(500)]
    for alarm in alarms[::2] + far:
        watchdog.cancel(alarm)
    assert fired.count() == 0
    clock.advance(1.0)
    watchdog.schedule(0.0, fired.action(-1))
    wait_until(lambda: -1 in fired.at, timeout=10, message="the last alarm fired")
    assert sorted(fired.at) == [-1, *range(1, 200, 2)]
    assert watchdog.pending() == 0


def test_calls_start_no_thread_of_their_own(harness: Harness) -> None:
    url = f"{harness.base_url}/jobs/1"
    harness.http.call("poll", "GET", url)  # the connection (and its server thread) exists now
    started: list[str] = []

    def note_thread(frame: object, event: str, arg: object) -> None:
        started.append(threading.current_thread().name)

    threading.settrace(note_thread)
    try:
        for _ in range(30):
            harness.http.call("poll", "GET", url)
    finally:
        threading.settrace(None)
    assert [name for name in started if "process_request_thread" not in name] == []
    assert WATCHDOG.pending() == 0  # every call's deadline was cancelled, none left behind


def test_a_proxy_from_the_environment_is_used_on_every_call(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", harness.base_url)
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    with VendorHttp(VENDOR, timeout_seconds=2.0, sleep=harness.sleeps.append) as http:
        for _ in range(2):
            assert http.call("poll", "GET", "http://vendor.invalid/jobs/1").status_code == 200
        with pytest.raises(RetryableVendorError, match="connection failed"):
            http.call("poll", "GET", "http://direct.invalid/jobs/1")
    assert [seen.path for seen in harness.seen] == ["http://vendor.invalid/jobs/1"] * 2
