"""Typed errors from a real server, Retry-After on a rate-limited one, and the
retry rule (which calls are retried on what) on a scripted transport."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable

import httpx
import pytest

import forgeline
from tests.sdk.helpers import RecordingTransport

MISSING_TASK = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


# -- typed errors from the real server --------------------------------------


def test_errors_are_typed_and_carry_code_message_and_request_id(client: forgeline.Client) -> None:
    with pytest.raises(forgeline.NotFound) as caught:
        client.get_task(MISSING_TASK)
    err = caught.value
    assert err.status == 404 and err.code == "not_found"
    assert MISSING_TASK in err.message
    assert re.fullmatch(r"[0-9a-f]{16}", err.request_id or "")
    assert str(err).startswith("404 not_found: ") and err.request_id in str(err)

    with pytest.raises(forgeline.InvalidRequest) as caught_invalid:
        client.submit(None, priority=10)
    assert caught_invalid.value.status == 422 and caught_invalid.value.code == "invalid"
    assert caught_invalid.value.field == "priority" and caught_invalid.value.details == {"field": "priority"}


def test_the_request_id_sent_by_the_client_comes_back_in_the_error(server: Any, admin_token: str) -> None:
    with forgeline.Client(server.url, admin_token, headers={"X-Request-ID": "sdk-test.1"}) as c:
        with pytest.raises(forgeline.NotFound) as caught:
            c.get_run(MISSING_TASK)
    assert caught.value.request_id == "sdk-test.1"


def test_authentication_and_role_failures_are_typed(server: Any) -> None:
    with forgeline.Client(server.url, "not-a-jwt") as c:
        with pytest.raises(forgeline.Unauthorized) as caught:
            c.list_workers()
    assert caught.value.code == "unauthorized" and caught.value.status == 401
    with forgeline.Client(server.url, server.token("watcher", "observer")) as c:
        with pytest.raises(forgeline.Forbidden) as forbidden:
            c.submit({"x": 1})
    assert forbidden.value.code == "forbidden" and forbidden.value.status == 403


def test_state_conflicts_are_typed(client: forgeline.Client, queue: str) -> None:
    task = client.submit(None, queue=queue)
    with pytest.raises(forgeline.NotDead):
        client.requeue(task.id)
    client.cancel(task.id, reason="not needed")
    with pytest.raises(forgeline.IllegalTransition) as caught:
        client.cancel(task.id)
    assert caught.value.code == "illegal_transition" and isinstance(caught.value, forgeline.Conflict)


# -- Retry-After on a rate-limited server -----------------------------------


def test_a_429_is_retried_after_the_servers_retry_after(ratelimited_server: Any) -> None:
    token = ratelimited_server.admin_token()
    no_retry = forgeline.Client(ratelimited_server.url, token, retry=forgeline.RetryPolicy(max_retries=0))
    # Empty the one-request bucket: the next read is refused.
    limited = None
    for _ in range(10):
        try:
            no_retry.list_workers()
        except forgeline.RateLimited as e:
            limited = e
            break
    assert limited is not None, "the read bucket never ran dry"
    assert limited.code == "rate_limited" and limited.status == 429 and limited.request_id
    assert limited.retry_after is not None and 1 <= limited.retry_after <= 5

    recorder = RecordingTransport()
    retrying = forgeline.Client(
        ratelimited_server.url, token, transport=recorder, retry=forgeline.RetryPolicy(max_retries=3, max_wait=30)
    )
    retrying.list_workers()  # refused first, then retried after Retry-After
    calls = recorder.calls("GET", "/api/v1/workers")
    assert [c["status"] for c in calls][-1] == 200
    refused = [c for c in calls if c["status"] == 429]
    assert refused, "the retrying client was never refused"
    for before, after in zip(calls, calls[1:]):
        assert before["status"] == 429
        waited = after["sent"] - before["sent"]
        assert waited >= float(before["headers"]["retry-after"]) - 0.05, "retried before Retry-After"

    # A Retry-After longer than the policy's max_wait raises at once.
    impatient = forgeline.Client(ratelimited_server.url, token, retry=forgeline.RetryPolicy(max_retries=3, max_wait=0.5))
    started = time.monotonic()
    with pytest.raises(forgeline.RateLimited):
        for _ in range(10):
            impatient.list_workers()
    assert time.monotonic() - started < 5
    for c in (no_retry, retrying, impatient):
        c.close()


# -- the retry rule, on a scripted transport ---------------------------------


def scripted(statuses: list[int], body: Any, calls: list[httpx.Request], retry_after: str = "0") -> httpx.MockTransport:
    """Answers with ``statuses`` in turn (the last one repeats)."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = statuses[min(len(calls), len(statuses)) - 1]
        if status >= 400:
            code = {429: "rate_limited", 503: "store_unavailable", 409: "stale_lease"}.get(status, "internal")
            return httpx.Response(
                status,
                headers={"Retry-After": retry_after, "X-Request-ID": f"req-{len(calls)}"},
                json={"error": {"code": code, "message": "scripted", "request_id": f"req-{len(calls)}"}},
            )
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


TASK = {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "state": "queued", "queue": "q"}


def _client(transport: httpx.BaseTransport, **kw: Any) -> forgeline.Client:
    return forgeline.Client("http://forgeline.test", "t", transport=transport, **kw)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.complete("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1, "r"),
        lambda c: c.fail("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1, "e"),
        lambda c: c.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        lambda c: c.requeue("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ],
    ids=["complete", "fail", "cancel", "requeue"],
)
def test_a_503_is_not_retried_for_calls_that_could_double_apply(call: Callable[[forgeline.Client], Any]) -> None:
    calls: list[httpx.Request] = []
    with _client(scripted([503, 200], TASK, calls)) as c:
        with pytest.raises(forgeline.Unavailable) as caught:
            call(c)
    assert len(calls) == 1 and caught.value.request_id == "req-1" and caught.value.retry_after == 0


def test_a_503_is_retried_for_reads_and_for_submits_which_carry_an_idempotency_key() -> None:
    calls: list[httpx.Request] = []
    with _client(scripted([503, 503, 200], TASK, calls)) as c:
        assert c.get_task(TASK["id"]).id == TASK["id"]
    assert len(calls) == 3

    calls.clear()
    with _client(scripted([503, 201], TASK, calls)) as c:
        c.submit({"x": 1})
    assert len(calls) == 2
    keys = {r.headers["idempotency-key"] for r in calls}
    assert len(keys) == 1 and keys.pop().startswith("fl-py-"), "every attempt must send the same key"
    assert calls[0].content == calls[1].content, "every attempt must send the same bytes"

    calls.clear()
    with _client(scripted([503, 201], TASK, calls), auto_idempotency_key=False) as c:
        with pytest.raises(forgeline.Unavailable):
            c.submit({"x": 1})
    assert len(calls) == 1 and "idempotency-key" not in calls[0].headers


def test_a_429_is_retried_for_every_call_and_bounded_by_max_retries() -> None:
    calls: list[httpx.Request] = []
    with _client(scripted([429, 200], TASK, calls)) as c:
        assert c.complete(TASK["id"], 1, None).id == TASK["id"]
    assert len(calls) == 2

    calls.clear()
    with _client(scripted([429], TASK, calls), retry=forgeline.RetryPolicy(max_retries=2)) as c:
        with pytest.raises(forgeline.RateLimited):
            c.get_task(TASK["id"])
    assert len(calls) == 3


def test_a_stale_lease_is_never_retried() -> None:
    calls: list[httpx.Request] = []
    with _client(scripted([409, 200], TASK, calls)) as c:
        with pytest.raises(forgeline.StaleLease):
            c.heartbeat(TASK["id"], 1)
    assert len(calls) == 1


def test_a_connection_that_was_never_made_is_retried_for_every_call() -> None:
    attempts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(attempts) == 2:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json=TASK)

    with _client(httpx.MockTransport(handler)) as c:
        with pytest.raises(forgeline.TransportError) as caught:
            c.complete(TASK["id"], 1, None)  # refused: retried; reset after sending: not
    assert len(attempts) == 2 and caught.value.sent is True

    attempts.clear()
    with _client(httpx.MockTransport(handler)) as c:
        assert c.get_task(TASK["id"]).id == TASK["id"]  # a read is retried either way
    assert len(attempts) == 3


def test_an_error_body_that_is_not_forgelines_still_gives_a_typed_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    with _client(transport, retry=forgeline.RetryPolicy(max_retries=0)) as c:
        with pytest.raises(forgeline.Unavailable) as caught:
            c.get_task(TASK["id"])
    assert caught.value.code is None and caught.value.status == 502 and "bad gateway" in caught.value.message


def test_stale_dossier_exposes_the_current_hash_from_the_details() -> None:
    current = "c2b8948393ab1b7cb7dbcab9dd5671f90bb8d4fa24689da43f2ccd7503afbece"
    message = f"the dossier of review X changed since you saw it (now {current}); reload it and decide again"
    error = {"code": "stale_dossier", "message": message, "details": {"current_hash": current}}
    transport = httpx.MockTransport(lambda r: httpx.Response(409, content=json.dumps({"error": error})))
    with _client(transport) as c:
        with pytest.raises(forgeline.StaleDossier) as caught:
            c.decide("01ARZ3NDEKTSV4RRFFQ69G5FAV", "approved", dossier_hash="0" * 64)
    assert caught.value.current_hash == current
