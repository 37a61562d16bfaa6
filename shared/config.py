"""One place for configuration.

Every setting comes from the environment (12-factor), is read once by :func:`load_settings`
and frozen. Factories take the :class:`Settings` object as a parameter; no module reads
``os.environ`` at import time. Every variable here is documented in README.md's table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace


def _bool(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/warden"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Broker defaults to REDIS_URL; a RabbitMQ URL (amqp://) works as well.
    celery_broker_url: str | None = None
    secret_key: str = "dev-insecure-secret-change-me"  # noqa: S105 - dev default; README says set it
    public_url: str | None = None  # e.g. https://api.example.com; used for websocket_url
    port: int = 8000
    db_pool_min: int = 1
    db_pool_max: int = 20
    max_body_bytes: int = 1024 * 1024
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    ws_token_ttl_s: int = 3600
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
    log_level: str = "INFO"
    log_json: bool = True
    # Celery's own task events (for Flower / `celery events`): off by default, since each task then
    # costs extra Redis PUBLISHes on the hot path; the project's events and /metrics cover the rest.
    celery_events: bool = False

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
    ("WARDEN_MAX_DELIVERIES", "max_deliveries", int),
    ("WARDEN_HOSTNAME", "hostname", str),
    ("WARDEN_WS_TOKEN_TTL_S", "ws_token_ttl_s", int),
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
    ("WARDEN_LOG_LEVEL", "log_level", str),
    ("WARDEN_LOG_JSON", "log_json", _bool),
    ("WARDEN_CELERY_EVENTS", "celery_events", _bool),
)


class ConfigError(ValueError):
    """A variable is set to a value that cannot be used."""


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
    if settings.lease_s < 1:
        raise ConfigError("WARDEN_LEASE_S must be at least 1 (seconds)")
    if settings.max_deliveries < 1:
        raise ConfigError("WARDEN_MAX_DELIVERIES must be at least 1")
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
