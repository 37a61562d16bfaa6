"""Turning stored records into the JSON the API promises."""

from __future__ import annotations

from typing import Any

from shared.store.executions import Execution
from shared.views import execution_json


def execution(e: Execution, *, webhook: dict[str, Any] | None = None) -> dict[str, Any]:
    return execution_json(e, webhook=webhook)
