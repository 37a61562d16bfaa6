"""Monitoring Task creation under pressure: the per-key rate limit (429) and an unavailable
compiler (503 quickly, never a hang or a 500)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

from tests.api.monitoring_helpers import body, create, server_with


def test_rate_limit_on_task_creation(stack, settings, db):
    with server_with(settings, db, rate_limit_per_s=0.5, rate_limit_burst=3) as c:
        codes = [create(c, dry_run=True) for _ in range(5)]
        assert [r.status_code for r in codes[:3]] == [200, 200, 200]
        limited = codes[-1]
        assert limited.status_code == 429
        assert limited.json()["detail"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["RateLimit-Limit"] == "3" and limited.headers["RateLimit-Remaining"] == "0"
        assert "RateLimit-Reset" in limited.headers


def test_broker_down_is_503_quickly(stack, settings, db):
    with server_with(settings, db, celery_broker_url="redis://127.0.0.1:1/0", compile_timeout_s=5.0) as c:
        for payload in (body(), body(dry_run=True)):
            start = time.monotonic()
            r = c.post("/api/v1/tasks", json=payload)
            assert r.status_code == 503, r.text
            assert time.monotonic() - start < 5
            detail = r.json()["detail"]
            assert detail["code"] == "compiler_unavailable" and "broker" in detail["message"]
        assert c.get("/api/v1/tasks").json()["total_count"] == 0


def test_no_compiler_worker_is_503_after_the_timeout(stack, settings, db):
    # A broker database no worker consumes: the message is published, nobody answers.
    parts = urlsplit(settings.redis_url)
    index = int((parts.path or "/0").strip("/") or 0)
    idle_broker = urlunsplit(parts._replace(path=f"/{(index + 7) % 16}"))
    with server_with(settings, db, celery_broker_url=idle_broker, compile_timeout_s=0.5) as c:
        start = time.monotonic()
        r = create(c)
        elapsed = time.monotonic() - start
        assert r.status_code == 503, r.text
        assert 0.4 < elapsed < 3
        detail = r.json()["detail"]
        assert detail["code"] == "compiler_unavailable" and "compiler" in detail["message"]
        assert r.headers["Retry-After"] == "1"
        r = c.post("/api/v1/conditions/explain", json={"intent": "Alert me when AAPL falls below 150",
                                                       "entity_scope": "AAPL"})
        assert r.status_code == 503
        assert c.get("/api/v1/tasks").json()["total_count"] == 0


def test_concurrent_requests_without_a_worker_each_wait_at_most_the_timeout(stack, settings, db):
    """Requests that queue behind a group in flight still answer within their own timeout (the
    group waits until its earliest deadline), not one group's timeout after another's."""
    from concurrent.futures import ThreadPoolExecutor

    parts = urlsplit(settings.redis_url)
    index = int((parts.path or "/0").strip("/") or 0)
    idle_broker = urlunsplit(parts._replace(path=f"/{(index + 7) % 16}"))
    with server_with(settings, db, celery_broker_url=idle_broker, compile_timeout_s=0.6) as c:
        def timed(i: int) -> tuple[int, float]:
            time.sleep(0.05 * i)  # arrivals spread while the first group is waiting
            start = time.monotonic()
            r = c.post("/api/v1/tasks", json={**body(), "dry_run": True})
            return r.status_code, time.monotonic() - start

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(timed, range(6)))
        assert [code for code, _ in results] == [503] * 6
        assert max(elapsed for _, elapsed in results) < 1.1, results
