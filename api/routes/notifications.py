"""Notifications (alerts delivered to ``notification``) and the workspace webhook secret."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import key_id, workspace_id
from api.services import services
from shared.errors import BadRequest, NotFound
from shared.paging import decode_cursor, encode_cursor, parse_limit
from shared.store import notifications, workspaces

bp = Blueprint("notifications", __name__)


@bp.get("/notifications")
def list_notifications() -> Response:
    """Notifications, newest first (live on /ws/notifications).
    ---
    get:
      tags: [signals]
      parameters:
        - {in: query, name: unread, schema: {type: boolean}, description: Only unread ones}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
        - {in: query, name: cursor, schema: {type: string}}
      responses:
        200: {description: A page of notifications, content: {application/json: {schema: NotificationList}}}
        400: {description: Bad filter, limit or cursor, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    raw = request.args.get("unread", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest("unread must be true or false", code="invalid_filter")
    limit = parse_limit(request.args.get("limit"))
    after = decode_cursor(request.args.get("cursor"))
    items, has_more, total = notifications.list_page(services().db, workspace_id(), unread=raw in ("true", "1"),
                                                     after_id=after, limit=limit)
    return jsonify({"items": items, "has_more": has_more,
                    "next_cursor": encode_cursor(items[-1]["notification_id"]) if has_more and items else None,
                    "total_count": total})


@bp.get("/notifications/stream")
def notification_stream_url() -> Response:
    """A WebSocket URL (with a short-lived token) streaming this workspace's notifications.
    ---
    get:
      tags: [notifications]
      responses:
        200: {description: "websocket_url for /ws/notifications; append &after=<notification_id> to replay"}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    from api.intake import websocket_url

    token = services().tokens.issue(workspace_id(), "notifications", key_id())
    return jsonify({"websocket_url": websocket_url("notifications", "", token)})


@bp.post("/notifications/<notification_id>/read")
def mark_read(notification_id: str) -> Response:
    """Mark a notification read (repeating it changes nothing).
    ---
    post:
      tags: [signals]
      parameters:
        - {in: path, name: notification_id, required: true, schema: {type: string}}
      responses:
        200: {description: The notification, content: {application/json: {schema: NotificationSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such notification in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    row = notifications.mark_read(services().db, workspace_id(), notification_id)
    if row is None:
        raise NotFound(f"Notification {notification_id} not found", code="notification_not_found")
    return jsonify(row)


def _secret(secret: str) -> Response:
    return jsonify({"secret": secret, "algorithm": "Standard Webhooks v1 (HMAC-SHA256 over id.timestamp.body)"})


@bp.get("/webhook-secret")
def show_webhook_secret() -> Response:
    """The workspace secret that signs webhook deliveries (webhook-signature: v1,<base64>).
    ---
    get:
      tags: [signals]
      responses:
        200: {description: The current secret, content: {application/json: {schema: WebhookSecret}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    return _secret(workspaces.webhook_secret(services().db, workspace_id()))


@bp.post("/webhook-secret/rotate")
def rotate_webhook_secret() -> Response:
    """Replace the secret; deliveries from now on (including retries) are signed with the new one.
    ---
    post:
      tags: [signals]
      responses:
        200: {description: The new secret, content: {application/json: {schema: WebhookSecret}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    return _secret(notifications.rotate_webhook_secret(services().db, workspace_id()))
