"""The warden command line: the dev stack, database and key administration, the outbox relay,
offline audit verification, signing-key rotation and benchmarks.

commands:
  warden dev                          run the dev stack in this checkout (what make run starts)
  warden migrate                      apply database migrations
  warden create-key --workspace NAME  print a new API key (its last line of output)
  warden revoke-key KEY               revoke an API key, at once on every API process
  warden relay                        publish the outbox to the broker (one per host or more)
  warden verify-audit FILE            verify an audit package offline (exit 0 only when valid)
  warden rotate-signing-key           retire the certificate signing key and generate a new one
  warden bench                        run the benchmarks, print JSON, write bench/results/latest.json

Commands that use the database find it in DATABASE_URL / REDIS_URL, else in the dev stack that
make run keeps running in this checkout; with neither they stop and say so.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class NoServices(Exception):
    """No service URL in the environment and no dev stack running in this checkout."""


def _settings(*, redis: bool = False):  # type: ignore[no-untyped-def]
    """Settings for a command that needs the database (and Redis when ``redis``): from
    DATABASE_URL / REDIS_URL, else from the dev stack running in this checkout, never the
    built-in defaults (127.0.0.1:5432 may be someone else's PostgreSQL)."""
    from shared.config import load_settings
    from warden.devstack import with_dev_stack

    env = with_dev_stack(os.environ, Path.cwd())
    missing = [name for name in ("DATABASE_URL", "REDIS_URL")[: 2 if redis else 1] if not env.get(name)]
    if missing:
        raise NoServices(f"no {' or '.join(missing)} and no dev stack running in {Path.cwd()}: start one with"
                         f" `make run` in this checkout (another terminal), or set {' and '.join(missing)}")
    return load_settings(env)


def cmd_migrate(_: argparse.Namespace) -> int:
    from shared.migrate import migrate

    applied = migrate(_settings().database_url)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_create_key(args: argparse.Namespace) -> int:
    from shared.db import Database
    from shared.migrate import migrate
    from shared.store import workspaces

    settings = _settings()
    migrate(settings.database_url)
    db = Database(settings.database_url, maxconn=2)
    ws = workspaces.get_or_create_workspace(db, args.workspace)
    key = workspaces.create_key(db, ws.id, name=args.name)
    print(f"workspace {ws.name} ({ws.id}): new API key (shown once, store it now):", file=sys.stderr)
    print(key)
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    import redis

    from shared import revocation
    from shared.db import Database
    from shared.store import workspaces

    settings = _settings(redis=True)
    db = Database(settings.database_url, maxconn=2)
    if workspaces.revoke_key(db, args.key):
        try:
            revocation.announce(settings.redis_url)
        except redis.RedisError as exc:
            print(f"revoked; Redis unreachable ({exc}): API processes refuse the key within"
                  f" WARDEN_AUTH_CACHE_S ({settings.auth_cache_s:g} s)", file=sys.stderr)
            return 0
        print("revoked")
        return 0
    print("no such active key", file=sys.stderr)
    return 1


def cmd_relay(_: argparse.Namespace) -> int:
    from shared import logs, outbox
    from shared.celery_app import make_celery
    from shared.db import Database

    settings = _settings(redis=True)
    logs.configure(settings.log_level, settings.log_json)
    db = Database(settings.database_url, maxconn=2, application_name="warden-relay")  # named in pg_stat_activity
    outbox.run_relay(db, make_celery(settings, main="warden-relay"),
                     settings.redis_url, sweep_s=min(settings.outbox_sweep_s, 1.0))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from warden.devstack import run_dev

    return run_dev(Path.cwd(), port=args.port)


def cmd_verify_audit(args: argparse.Namespace) -> int:
    try:
        from warden.audit_cli import verify_audit_file
    except ModuleNotFoundError:
        print("verify-audit is not available in this build", file=sys.stderr)
        return 2
    return verify_audit_file(Path(args.file), quiet=args.quiet)


def cmd_rotate_signing_key(_: argparse.Namespace) -> int:
    from shared.db import Database
    from shared.migrate import migrate
    from workers.signing import rotate

    settings = _settings()
    if settings.signing_key:
        print("WARDEN_SIGNING_KEY is set: rotate by changing it (the old public key stays listed)", file=sys.stderr)
        return 1
    migrate(settings.database_url)
    old, new = rotate(Database(settings.database_url, maxconn=2), settings)
    print(f"retired {old or '(none)'}; new signing key {new}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.run import main as bench_main

    return bench_main(args.only)


def cmd_set_limit(args: argparse.Namespace) -> int:
    from shared.db import Database
    from shared.store import workspaces

    settings = _settings()
    db = Database(settings.database_url, maxconn=2)
    limit = None if args.max_running_executions in ("none", "unset") else int(args.max_running_executions)
    if limit is not None and limit < 1:
        print("warden set-limit: --max-running-executions must be a positive number, or none", file=sys.stderr)
        return 2
    if not workspaces.set_max_running(db, args.workspace, limit):
        print(f"warden set-limit: no workspace named {args.workspace!r}", file=sys.stderr)
        return 1
    print(f"workspace {args.workspace}: max_running_executions = {'none' if limit is None else limit}")
    return 0


def main(argv: list[str] | None = None) -> int:
    intro, _, rest = (__doc__ or "").partition("\n\ncommands:")
    parser = argparse.ArgumentParser(prog="warden", description=intro.strip(), epilog=rest.split("\n\n", 1)[-1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    p = sub.add_parser("dev", help="run the dev stack in this checkout (what make run starts)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    p.set_defaults(fn=cmd_dev)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    p = sub.add_parser("create-key", help="print a new API key for a workspace (created if new)")
    p.add_argument("--workspace", required=True)
    p.add_argument("--name", default=None, help="a label for the key")
    p.set_defaults(fn=cmd_create_key)
    p = sub.add_parser("revoke-key", help="revoke an API key, at once on every API process")
    p.add_argument("key")
    p.set_defaults(fn=cmd_revoke_key)
    p = sub.add_parser("set-limit", help="cap a workspace's running executions (the rest wait queued)")
    p.add_argument("--workspace", required=True)
    p.add_argument("--max-running-executions", required=True, metavar="N|none",
                   help="at most N of its executions run at once; none removes the cap")
    p.set_defaults(fn=cmd_set_limit)
    sub.add_parser("relay", help="publish the outbox to the broker (one per host or more)").set_defaults(fn=cmd_relay)
    p = sub.add_parser("verify-audit", help="verify an audit package offline (exit 0 only when valid)")
    p.add_argument("file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_verify_audit)
    sub.add_parser("rotate-signing-key", help="retire the certificate signing key and generate a new one").set_defaults(
        fn=cmd_rotate_signing_key)
    p = sub.add_parser("bench", help="run the benchmarks, print JSON, write bench/results/latest.json")
    p.add_argument("--only", action="append", default=None, help="run only this benchmark (repeatable)")
    p.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except NoServices as exc:
        print(f"warden {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a service down is one line for a person at a terminal, not a traceback
        import psycopg2

        from shared.errors import ServiceUnavailable

        if not isinstance(exc, ServiceUnavailable | psycopg2.OperationalError):
            raise
        print(f"warden {args.command}: {str(exc).strip()}. Is `make run` running, or are DATABASE_URL /"
              " REDIS_URL set?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
