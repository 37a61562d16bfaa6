"""The intake hot path's shortcuts give the same answers as the general code they stand in for:
the hand-checked agent-task validation, the stream-token writer, the lean rate-limit round trip
and the coalesced outbox wake-ups."""

from __future__ import annotations

import threading
import time
from typing import Any
from unittest import mock

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from marshmallow import ValidationError

from api.intake import _fast_load, _schema
from api.ratelimit import TokenBucket
from api.tokens import StreamTokens
from api.wakeup import OutboxWaker
from shared.outbox import CHANNEL
from shared.redis_client import LeanRedis, RedisHandle, pack
from tests.support import ApiClient

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 2_000_000), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5), st.sampled_from(["", " ", "Summarize it", "hipaa", "legal", "local", "openai", "m"]),
    st.lists(st.one_of(st.text(max_size=3), st.integers(), st.sampled_from(["fs:read", "x" * 101])), max_size=4),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(
    st.sampled_from(["task", "compliance_policy", "budget_cents", "permissions", "provider", "model",
                     "webhook_url", "x"]), _values, max_size=7))
def test_fast_validation_agrees_with_the_schema(body: dict[str, Any]) -> None:
    fast = _fast_load(body)
    try:
        expected = _schema.load(body)
    except ValidationError:
        assert fast is None  # every refusal, and its message, is the schema's
        return
    if "webhook_url" not in body:
        # Everything the schema accepts without a webhook_url field is taken by the fast path:
        # one that declined it all would fail here.
        assert fast == expected
    elif fast is not None:
        assert fast == expected


def test_fast_validation_takes_the_common_bodies() -> None:
    body = {"task": "Summarize the note.", "compliance_policy": "hipaa", "budget_cents": 2000,
            "permissions": ["fs:read"], "provider": "local", "model": "m"}
    assert _fast_load(body) == _schema.load(body)
    assert _fast_load({"task": "x"}) == _schema.load({"task": "x"})
    assert _fast_load({"task": "x", "webhook_url": "https://example.com/h"}) is None  # the schema checks URLs
    assert _fast_load({"task": "x", "webhook_url": None}) is None  # any webhook_url field goes to the schema


def test_stream_tokens_are_itsdangerous_tokens() -> None:
    tokens = StreamTokens("s3cret", 60)
    reference = URLSafeTimedSerializer("s3cret", salt="warden-ws")
    with mock.patch("time.time", return_value=1_790_000_000.25):
        assert tokens.issue("ws_01abc", "exec_01xyz", "key_9") == reference.dumps(["ws_01abc", "exec_01xyz", "key_9"])
    token = tokens.issue("ws_1", "exec_2", "key_3")
    assert tokens.check(token, "exec_2") == ("ws_1", "key_3")
    assert tokens.check(token, "exec_3") is None
    # A signature changed in a character that carries only signature bits (the last one also
    # carries padding bits, and replacing it could leave it as it was).
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    assert tokens.check(tampered, "exec_2") is None
    assert StreamTokens("other", 60).check(token, "exec_2") is None
    # a token from before tokens named their key: honoured (until it expires), with no key to check
    assert tokens.check(reference.dumps(["ws_1", "exec_2"]), "exec_2") == ("ws_1", None)
    assert tokens.check(reference.dumps({"ws": "ws_1"}), "exec_2") is None


def test_token_bucket_round_trip_survives_script_flush_and_dropped_connections(settings: Any) -> None:
    lean = LeanRedis(settings.redis_url)
    bucket = TokenBucket(lean, rate_per_s=1.0, burst=2)
    key = f"t-{time.monotonic_ns()}"
    first, second, third = (bucket.hit(key) for _ in range(3))
    assert (first.allowed, first.remaining, second.allowed, second.remaining) == (True, 1, True, 0)
    assert not third.allowed and third.retry_after_s >= 1 and third.limit == 2

    admin = redis_lib.Redis.from_url(settings.redis_url)
    admin.script_flush()  # NOSCRIPT: loaded again, answered as before
    assert bucket.hit(key + "-b").allowed
    own_id = lean.call(pack(b"CLIENT", b"ID"))  # the one idle connection (nobody else's is touched)
    admin.client_kill_filter(_id=str(own_id))  # it dies while idle: the next hit uses a fresh one
    assert bucket.hit(key + "-c").allowed
    assert lean.call(pack(b"CLIENT", b"ID")) != own_id
    lean.close()


def test_concurrent_hits_share_round_trips_and_stay_exact(settings: Any) -> None:
    """Pipelined hits (one write for a group of concurrent requests) keep the bucket exact: of 40
    simultaneous hits on a burst of 10, exactly 10 pass, also right after a script flush."""
    from concurrent.futures import ThreadPoolExecutor

    lean = LeanRedis(settings.redis_url)
    bucket = TokenBucket(lean, rate_per_s=0.001, burst=10)
    admin = redis_lib.Redis.from_url(settings.redis_url)
    for round_ in range(2):
        key = f"c-{round_}-{time.monotonic_ns()}"
        admin.script_flush()  # the group meets NOSCRIPT: loaded once, every hit answered
        start = threading.Barrier(40)

        def hit(_: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait()
            return bucket.hit(key).allowed

        with ThreadPoolExecutor(40) as pool:
            verdicts = list(pool.map(hit, range(40)))
        assert verdicts.count(True) == 10
    assert bucket._group.batches < 80  # they were grouped
    replies = lean.call_many([pack(b"PING"), pack(b"NOSUCHCOMMAND"), pack(b"PING")])
    assert replies[0] == replies[2] and isinstance(replies[1], redis_lib.ResponseError)
    assert lean.call(pack(b"PING"))  # the connection read every reply: still clean
    lean.close()


def test_wake_is_immediate_when_idle_and_coalesced_in_bursts(settings: Any) -> None:
    handle = RedisHandle(settings.redis_url)
    sub = redis_lib.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    sub.subscribe(CHANNEL)
    sub.get_message(timeout=1)
    waker = OutboxWaker(handle, interval_s=0.05)
    try:
        t0 = time.monotonic()
        waker.wake()
        assert sub.get_message(timeout=2) is not None
        assert time.monotonic() - t0 < 0.5  # not held back by the interval

        time.sleep(0.1)
        before = waker.published
        threads = [threading.Thread(target=lambda: [waker.wake() for _ in range(50)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.3)
        assert 1 <= waker.published - before <= 3  # 200 wake-ups, one PUBLISH per interval at most
        assert sub.get_message(timeout=1) is not None
    finally:
        waker.stop()
        sub.close()


@pytest.mark.parametrize("path", ["/api/v1/executions?status=%00", "/api/v1/executions/ex%00ec"])
def test_nul_in_url_still_refused(client: ApiClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 400
    assert r.json()["detail"]["code"] == "invalid_characters"
