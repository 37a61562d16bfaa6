"""The fleet fixture: one fleet of network-namespace hosts for this package's tests.

Building it needs root (network namespaces, veth pairs, a bridge). Elsewhere only these tests
are left out, and the run says so in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import netns
from tests.fleet.harness import Fleet

HERE = Path(__file__).resolve().parent
_state: dict[str, object] = {}

# A dead host's runs come back once their lease expires (beat looks every half lease); the
# broker's visibility timeout must exceed the run time limit (load_settings insists), as
# production's 3600 s exceeds its 900 s.
VISIBILITY_S = 40
TIME_LIMIT_S = 30
LEASE_S = 10
EXEC_CONCURRENCY = 8

FLEET_ENV = {
    "WARDEN_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    "WARDEN_EXECUTIONS_TIME_LIMIT_S": str(TIME_LIMIT_S),
    "WARDEN_EXECUTIONS_CONCURRENCY": str(EXEC_CONCURRENCY),
    "WARDEN_LEASE_S": str(LEASE_S),
    "WARDEN_DEFAULT_PROVIDER": "local",
}


def _is_fleet(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fleet_items = [i for i in items if _is_fleet(i)]
    if not fleet_items:
        return
    reason = netns.unavailable_reason()
    if reason is None:
        return
    _state["skipped"] = (len(fleet_items), reason)
    marker = pytest.mark.skip(reason=f"fleet tests need network namespaces: {reason}")
    for item in fleet_items:
        item.add_marker(marker)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    skipped = _state.get("skipped")
    if skipped:
        n, reason = skipped  # type: ignore[misc]
        terminalreporter.write_line(f"fleet tests left out ({n}): {reason}")


@pytest.fixture(scope="package")
def fleet() -> Iterator[Fleet]:
    with Fleet(env=FLEET_ENV) as f:
        yield f


@pytest.fixture()
def healthy(fleet: Fleet) -> Iterator[Fleet]:
    """The fleet whole before the test (a previous test's fault undone) and after it."""
    fleet.ensure_healthy()
    yield fleet
    fleet.ensure_healthy()
