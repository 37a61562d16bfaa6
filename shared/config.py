"""One place for configuration.

Every setting comes from the environment (12-factor), is read once by :func:`load_settings`
and frozen. Factories take the :class:`Settings` object as a parameter; no module reads
``os.environ`` at import time. Every variable here is documented in README.md's table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

T = TypeVar("T")


def _bool(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _origins(raw: str) -> tuple[str, ...]:
    """Comma-separated origins (``https://app.example.com``), compared case-insensitively."""
    out = tuple(o.strip().lower().rstrip("/") for o in raw.split(",") if o.strip())
    for o in out:
        if o != "*" and not (o.startswith(("http://", "https://")) and "/" not in o.split("://", 1)[1]):
            raise ValueError(f"{o!r} is not an origin such as https://app.example.com")
    return out


DEV_DEFAULT_SECRET = "dev-insecure-secret-change-me"  # noqa: S105 - a placeholder, refused at start
# Values that are published (this file, docker-compose.yml, docs): never a real secret.
PLACEHOLDER_SECRETS = frozenset({DEV_DEFAULT_SECRET, "change-me", "changeme", "change_me", "secret", "default"})


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/warden"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Broker defaults to REDIS_URL; a RabbitMQ URL (amqp://) works as well.
    celery_broker_url: str | None = None
    secret_key: str = DEV_DEFAULT_SECRET  # refused by every process entry (require_secret_key)
    public_url: str | None = None  # e.g. https://api.example.com; used for websocket_url
    port: int = 8000
    db_pool_min: int = 1
    db_pool_max: int = 20
    max_body_bytes: int = 1024 * 1024
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    # Stream tokens (websocket_url) are bound to one execution and expire after this; a client
    # that connects later, or reconnects after that, uses its API key (Authorization: Bearer).
    ws_token_ttl_s: int = 600
    # Browser origins allowed to open streams besides the API's own; "*" allows any. A client
    # that sends no Origin header is not a browser and is not checked.
    ws_allowed_origins: tuple[str, ...] = ()
    # How long an API process trusts a key it has verified. Revocations reach it at once through
    # Redis (shared/revocation.py); this bounds them only while Redis is unreachable.
    auth_cache_s: float = 5.0
    idempotency_ttl_s: int = 24 * 3600
    outbox_sweep_s: float = 5.0
    # Redis broker: an unacked message is redelivered after this long, so it must exceed the
    # longest task time limit (executions_time_limit_s) or long runs would be started twice.
    visibility_timeout_s: int = 3600
    executions_time_limit_s: int = 900
    # Run ownership (workers/ownership.py): a worker's lease on a run lasts this long unless its
    # heartbeat renews it (every third of it). A run whose worker died is taken over by another
    # once its lease has expired: this bounds recovery after a host loss, with the beat's sweep.
    lease_s: float = 30.0
    # A run taken this many times without ending (its worker died each time) ends error/worker_lost.
    max_deliveries: int = 3
    # How this host names itself in events and on the execution record (which worker ran a step).
    hostname: str | None = None
    # A queued execution untouched this long is re-enqueued (its broker message was lost).
    requeue_queued_s: float = 600.0
    compile_timeout_s: float = 10.0
    allow_private_webhooks: bool = False
    default_provider: str | None = None  # openai | anthropic | local; None → first with a key, else local
    default_model: str | None = None
    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    signing_key: str | None = None  # base64url Ed25519 seed; generated and stored when unset
    default_price_per_mtok_cents: int = 1500
    webhook_backoff_s: float = 5.0  # first webhook retry delay; each next one is 4x longer
    # One webhook attempt ends at this total deadline (connect, send and the whole response).
    webhook_timeout_s: float = 15.0
    log_level: str = "INFO"
    log_json: bool = True
    # Celery's own task events (for Flower / `celery events`): off by default, since each task then
    # costs extra Redis PUBLISHes on the hot path; the project's events and /metrics cover the rest.
    celery_events: bool = False
    # A redis:// broker through shared/kombu_redis.py (kombu's transport, fixed to reconnect after a
    # Redis restart: a kombu internal); 0 = kombu's own transport, public API only.
    kombu_patch: bool = True
    # With the patch: how many more waiting messages a consumer takes with each one BRPOP brings
    # (recorded as delivered in the same round trip, within its prefetch limit); 0 = one at a time.
    broker_take_batch: int = 32
    # shared/redis_client.LeanRedis (rate-limit checks, event and run-message publishes) drives
    # redis-py's Connection objects itself; 0 = the same commands through redis-py's client
    # (a pipeline per call), the library's reference path.
    lean_redis: bool = True

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


# (environment variable, attribute, coercion)
_ENV: tuple[tuple[str, str, type | object], ...] = (
    ("DATABASE_URL", "database_url", str),
    ("REDIS_URL", "redis_url", str),
    ("CELERY_BROKER_URL", "celery_broker_url", str),
    ("WARDEN_SECRET_KEY", "secret_key", str),
    ("WARDEN_PUBLIC_URL", "public_url", str),
    ("PORT", "port", int),
    ("WARDEN_DB_POOL_MIN", "db_pool_min", int),
    ("WARDEN_DB_POOL_MAX", "db_pool_max", int),
    ("WARDEN_MAX_BODY_BYTES", "max_body_bytes", int),
    ("WARDEN_RATE_LIMIT_PER_S", "rate_limit_per_s", float),
    ("WARDEN_RATE_LIMIT_BURST", "rate_limit_burst", int),
    ("WARDEN_LEASE_S", "lease_s", float),
    ("WARDEN_KOMBU_PATCH", "kombu_patch", _bool),
    ("WARDEN_LEAN_REDIS", "lean_redis", _bool),
    ("WARDEN_BROKER_TAKE_BATCH", "broker_take_batch", int),
    ("WARDEN_MAX_DELIVERIES", "max_deliveries", int),
    ("WARDEN_HOSTNAME", "hostname", str),
    ("WARDEN_WS_TOKEN_TTL_S", "ws_token_ttl_s", int),
    ("WARDEN_WS_ALLOWED_ORIGINS", "ws_allowed_origins", _origins),
    ("WARDEN_AUTH_CACHE_S", "auth_cache_s", float),
    ("WARDEN_IDEMPOTENCY_TTL_S", "idempotency_ttl_s", int),
    ("WARDEN_OUTBOX_SWEEP_S", "outbox_sweep_s", float),
    ("WARDEN_VISIBILITY_TIMEOUT_S", "visibility_timeout_s", int),
    ("WARDEN_EXECUTIONS_TIME_LIMIT_S", "executions_time_limit_s", int),
    ("WARDEN_REQUEUE_QUEUED_S", "requeue_queued_s", float),
    ("WARDEN_COMPILE_TIMEOUT_S", "compile_timeout_s", float),
    ("WARDEN_ALLOW_PRIVATE_WEBHOOKS", "allow_private_webhooks", _bool),
    ("WARDEN_DEFAULT_PROVIDER", "default_provider", str),
    ("WARDEN_DEFAULT_MODEL", "default_model", str),
    ("OPENAI_API_KEY", "openai_api_key", str),
    ("ANTHROPIC_API_KEY", "anthropic_api_key", str),
    ("WARDEN_SIGNING_KEY", "signing_key", str),
    ("WARDEN_DEFAULT_PRICE_PER_MTOK_CENTS", "default_price_per_mtok_cents", int),
    ("WARDEN_WEBHOOK_BACKOFF_S", "webhook_backoff_s", float),
    ("WARDEN_WEBHOOK_TIMEOUT_S", "webhook_timeout_s", float),
    ("WARDEN_LOG_LEVEL", "log_level", str),
    ("WARDEN_LOG_JSON", "log_json", _bool),
    ("WARDEN_CELERY_EVENTS", "celery_events", _bool),
)


class ConfigError(ValueError):
    """A variable is set to a value that cannot be used."""


def require_secret_key(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start an API, worker or relay process without a real ``WARDEN_SECRET_KEY``: it
    signs stream tokens and encrypts the certificate signing key, so a default one is public.
    ``make run`` generates one per checkout (``.warden/secret-key``); tests and bench set theirs."""
    env = os.environ if environ is None else environ
    value = env.get("WARDEN_SECRET_KEY", "").strip()
    if not value:
        raise ConfigError("WARDEN_SECRET_KEY is not set: set it to a long random value "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if value.lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(f"WARDEN_SECRET_KEY is the placeholder {value!r}: set it to a long random value "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")


def process_settings() -> Settings:
    """The settings of a server process (API, worker, relay): a real secret, then the rest."""
    require_secret_key()
    return load_settings()


def exit_on_config_error(step: Callable[[], T]) -> T:
    """Run a start-up step; on a ConfigError print one line and exit 2 (no traceback)."""
    try:
        return step()
    except ConfigError as exc:
        print(f"warden: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the frozen settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for var, attr, coerce in _ENV:
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[attr] = coerce(raw)  # type: ignore[operator]
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r}: {exc}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.rate_limit_per_s <= 0 or settings.rate_limit_burst <= 0:
        raise ConfigError("WARDEN_RATE_LIMIT_PER_S and WARDEN_RATE_LIMIT_BURST must be positive")
    if settings.requeue_queued_s <= 0:
        raise ConfigError("WARDEN_REQUEUE_QUEUED_S must be positive")
    if settings.default_price_per_mtok_cents <= 0:
        raise ConfigError("WARDEN_DEFAULT_PRICE_PER_MTOK_CENTS must be positive (a model is never free)")
    if not 0 < settings.ws_token_ttl_s <= 3600:
        raise ConfigError("WARDEN_WS_TOKEN_TTL_S must be between 1 and 3600 seconds (stream tokens are short-lived)")
    if settings.lease_s < 1:
        raise ConfigError("WARDEN_LEASE_S must be at least 1 (seconds)")
    if settings.max_deliveries < 1:
        raise ConfigError("WARDEN_MAX_DELIVERIES must be at least 1")
    if not 0 <= settings.broker_take_batch <= 1000:
        raise ConfigError("WARDEN_BROKER_TAKE_BATCH must be between 0 (one message at a time) and 1000")
    if not 0 < settings.webhook_timeout_s <= 45:  # an attempt must end well within its task's 60 s soft limit
        raise ConfigError("WARDEN_WEBHOOK_TIMEOUT_S must be above 0 and at most 45")
    limit = settings.executions_time_limit_s
    if settings.visibility_timeout_s <= limit + max(1, min(30, limit // 10)):  # celery_app.backstop_s
        raise ConfigError("WARDEN_VISIBILITY_TIMEOUT_S must exceed WARDEN_EXECUTIONS_TIME_LIMIT_S (plus its backstop:"
                          " a tenth of it, from 1 to 30 s)")
    return settings


# The model each provider uses when neither the request nor WARDEN_DEFAULT_MODEL names one.
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "local": "local-planner-1"}
PROVIDERS = ("openai", "anthropic", "local")


def resolve_provider(settings: Settings, requested: str | None, model: str | None) -> tuple[str, str]:
    """(provider, model) for a run: the request's choice, else the server default, else the first
    vendor with a key configured, else ``local`` (the offline rule-based planner)."""
    provider = requested or settings.default_provider
    if provider is None:
        if settings.openai_api_key:
            provider = "openai"
        elif settings.anthropic_api_key:
            provider = "anthropic"
        else:
            provider = "local"
    if model is None:
        model = settings.default_model if (settings.default_model and provider == (
            settings.default_provider or provider)) else DEFAULT_MODELS[provider]
    return provider, model
