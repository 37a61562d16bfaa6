"""Short-lived, execution-scoped WebSocket tokens (signed with WARDEN_SECRET_KEY, never logged).

The format is itsdangerous' ``URLSafeTimedSerializer`` (salt ``warden-ws``): ``check`` is its
``loads``. ``issue`` writes the same format without its per-call work (a new signer, the key
derivation and a zlib attempt on every token): the HMAC key is derived once and its state
copied per token. Tokens are never compressed, which ``loads`` accepts as it always has.
"""

from __future__ import annotations

import hmac
import json
import time

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes, want_bytes


class StreamTokens:
    def __init__(self, secret_key: str, ttl_s: int) -> None:
        self._s = URLSafeTimedSerializer(secret_key, salt="warden-ws")
        self.ttl_s = ttl_s
        signer = self._s.make_signer()
        self._sep = want_bytes(signer.sep)
        self._mac = hmac.new(signer.derive_key(), digestmod=signer.digest_method)

    def issue(self, workspace_id: str, resource_id: str, key_id: str) -> str:
        """A token for ``resource_id``, naming the API key it was issued to (refused once that key
        is revoked, api/ws.py)."""
        payload = base64_encode(json.dumps([workspace_id, resource_id, key_id], separators=(",", ":")).encode())
        value = payload + self._sep + base64_encode(int_to_bytes(int(time.time())))
        mac = self._mac.copy()
        mac.update(value)
        return (value + self._sep + base64_encode(mac.digest())).decode("ascii")

    def check(self, token: str, resource_id: str) -> tuple[str, str | None] | None:
        """(workspace id, key id) the token grants for ``resource_id``, or None. Tokens from
        before they named their key carry none, and are honoured until they expire."""
        try:
            grant = self._s.loads(token, max_age=self.ttl_s)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(grant, list) or len(grant) not in (2, 3) or grant[1] != resource_id:
            return None
        return grant[0], grant[2] if len(grant) == 3 else None
