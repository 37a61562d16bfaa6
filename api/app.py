"""The Flask application factory: the one place that wires settings, services, blueprints,
error handling, metrics and the OpenAPI document together.

gunicorn entry: ``gunicorn -c api/gunicorn_conf.py 'api.app:create_app()'``.
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, Response, g, request

from api import errors, metrics, openapi, ws, ws_notifications, ws_workflows
from api.auth import authenticate_request, ratelimit_headers
from api.body import reject_nul_in_url
from api.jsonprovider import FastJSONProvider
from api.routes import compliance, compliance_audit, conditions, documents, executions, health, monitoring, tasks
from api.routes import notifications as notifications_routes
from api.routes import signals as signals_routes
from api.routes import workflows as workflow_routes
from api.services import Services
from api.tokens import StreamTokens
from shared import logs
from shared.celery_app import make_celery
from shared.config import Settings, exit_on_config_error, process_settings
from shared.db import Database
from shared.redis_client import RedisHandle


def create_app(settings: Settings | None = None) -> Flask:
    # No settings given: this is a server process (gunicorn), which needs a real secret.
    settings = settings or exit_on_config_error(process_settings)
    logs.configure(settings.log_level, settings.log_json)
    app = Flask("warden", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.json = FastJSONProvider(app)
    svc = Services(
        settings=settings,
        db=Database(settings.database_url, minconn=settings.db_pool_min, maxconn=settings.db_pool_max),
        redis=RedisHandle(settings.redis_url),
        tokens=StreamTokens(settings.secret_key, settings.ws_token_ttl_s),
        celery=make_celery(settings, main="warden-api"),
    )
    app.extensions["warden"] = svc

    @app.before_request
    def _request_id() -> None:
        rid = request.environ.get("HTTP_X_REQUEST_ID") or os.urandom(16).hex()  # the X-Request-ID header
        g.request_id = rid = rid[:64]
        logs.request_id_var.set(rid)

    app.before_request(reject_nul_in_url)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return ratelimit_headers(response)

    app.url_map.converters["condition_ref"] = conditions.ConditionRef
    api_v1 = Blueprint("api_v1", __name__, url_prefix="/api/v1")
    api_v1.before_request(authenticate_request)
    for bp in (tasks.bp, executions.bp, documents.bp, compliance.bp, monitoring.bp, conditions.bp,
               signals_routes.bp, notifications_routes.bp):
        api_v1.register_blueprint(bp)
    api_v1.register_blueprint(compliance_audit.bp)  # audit packages (GET /compliance/executions/<id>/audit-package)
    api_v1.register_blueprint(workflow_routes.bp)  # /workflows: DAGs of executions
    app.register_blueprint(api_v1)
    app.register_blueprint(health.bp)
    errors.register(app)
    metrics.init_app(app, svc)
    openapi.init_app(app)
    ws.init_app(app, svc)  # WebSocket streams and the per-process fan-out hub
    ws_workflows.init_app(app, svc)  # /ws/workflows/<id> (after ws: it reuses its Sock and hub)
    ws_notifications.init_app(app, svc)  # /ws/notifications, on the same hub
    return app

