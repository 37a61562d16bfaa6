"""Flask's JSON provider with orjson writing the responses.

Responses are the API's largest CPU item after the socket writes (a dry run's trace, pages of
executions), and orjson encodes them several times faster than the standard library. What orjson
does not take natively goes through Flask's own ``default`` (Decimal as a string, datetime as an
HTTP date, dataclasses), so the output carries the same values as before; anything orjson refuses
(an integer beyond 64 bits, say) is written by the standard library instead. Parsing stays with
the standard library: its acceptance rules (lone surrogate escapes, for one) are part of the
request contract.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


class FastJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.keys() <= {"separators"} and kwargs.get("separators", (",", ":")) == (",", ":"):
            try:
                return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
            except (TypeError, orjson.JSONEncodeError):
                pass
        return super().dumps(obj, **kwargs)
