"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """PostgreSQL and Redis are reachable (503 otherwise)."""
    svc = services()
    checks = {"postgres": svc.db.ping(), "redis": svc.redis.ping()}
    ok = all(checks.values())
    resp = jsonify({"status": "ready" if ok else "unavailable", "checks": checks})
    resp.status_code = 200 if ok else 503
    return resp
