"""Short-lived, execution-scoped WebSocket tokens (signed with WARDEN_SECRET_KEY, never logged)."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer


class StreamTokens:
    def __init__(self, secret_key: str, ttl_s: int) -> None:
        self._s = URLSafeTimedSerializer(secret_key, salt="warden-ws")
        self.ttl_s = ttl_s

    def issue(self, workspace_id: str, resource_id: str) -> str:
        return self._s.dumps([workspace_id, resource_id])

    def check(self, token: str, resource_id: str) -> str | None:
        """The workspace id the token grants for ``resource_id``, or None."""
        try:
            workspace_id, rid = self._s.loads(token, max_age=self.ttl_s)
        except (BadSignature, ValueError, TypeError):
            return None
        return workspace_id if rid == resource_id else None
