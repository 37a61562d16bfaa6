"""A new API process builds what its first requests need before they come (``Services.warm``,
called from gunicorn's ``post_worker_init``) and opens their connections beside the server
(``Services.connect``); neither stops a server whose services are down from starting."""

from __future__ import annotations

import time

from api.app import create_app

WARMED = ["policies", "result backend", "broker transport", "intake"]


def test_warm_and_connect_with_the_services_up(settings):
    svc = create_app(settings).extensions["warden"]
    assert svc.warm() == WARMED
    assert svc.connect() == ["database", "rate limiter", "broker"]
    # What connect opened is what the requests use: the pools keep it.
    assert svc.db.ping()
    with svc.celery.producer_or_acquire() as producer:
        assert producer.connection.connected


def test_warm_connects_nothing_and_connect_gives_up_quietly_when_the_services_are_down(settings):
    down = settings.with_overrides(database_url="postgresql://nobody@127.0.0.1:9/none",
                                   redis_url="redis://127.0.0.1:9/0")
    svc = create_app(down).extensions["warden"]
    assert svc.warm() == WARMED
    started = time.monotonic()
    assert svc.connect() == []
    assert time.monotonic() - started < 30  # each attempt bounded (connect timeouts), not a wait
