"""Standard Webhooks interop: our signatures checked by the official ``standardwebhooks`` package.

A fresh workspace's secret is ``whsec_`` + standard base64 of 24 to 64 random bytes; 1,000 random
payloads signed by us verify with the reference verifier; a flipped byte and a timestamp six
minutes off are refused. Secrets stored in the old URL-safe form are rewritten by migration 0014
to the standard form of the same key, so old signatures and old receivers keep working.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import secrets
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared import webhooks
from shared.migrate import migration_files
from shared.store import workspaces

STANDARD = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")


def _fresh_secret(client) -> str:  # type: ignore[no-untyped-def]
    r = client.get("/api/v1/webhook-secret")
    assert r.status_code == 200, r.text
    return str(r.json()["secret"])


def _assert_standard(secret: str) -> None:
    assert STANDARD.match(secret), secret
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert 24 <= len(key) <= 64
    assert Webhook(secret)._whsecret == key  # the reference decodes the same key bytes


def _random_payload(rng: random.Random) -> bytes:
    text = "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 200)))
    doc = {"id": rng.getrandbits(64), "text": text,
           "values": [rng.random() for _ in range(rng.randrange(0, 10))], "flag": rng.random() < 0.5}
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()


def test_fresh_and_rotated_secrets_verify_with_the_reference(client):
    secrets_seen = [_fresh_secret(client)]
    r = client.post("/api/v1/webhook-secret/rotate")
    assert r.status_code == 200
    secrets_seen.append(r.json()["secret"])
    assert secrets_seen[1] == _fresh_secret(client) != secrets_seen[0]
    rng = random.Random(15)
    for secret in secrets_seen:
        _assert_standard(secret)
        ref = Webhook(secret)
        for i in range(500):
            body = _random_payload(rng)
            h = webhooks.headers(secret, f"msg_{i}", body)
            assert ref.verify(body, h, json_parse=False) is None  # raises when refused


def test_reference_refuses_a_flipped_byte_and_a_stale_or_future_timestamp(client):
    secret = _fresh_secret(client)
    ref = Webhook(secret)
    body = b'{"alert_id": "alert_1", "value": 101.5}'
    h = webhooks.headers(secret, "msg_1", body)
    ref.verify(body, h)  # the untouched message verifies
    for i in range(len(body)):
        flipped = bytearray(body)
        flipped[i] ^= 0x01
        with pytest.raises(WebhookVerificationError):
            ref.verify(bytes(flipped), h)
    bad_sig = dict(h, **{"webhook-signature": h["webhook-signature"][:-6] + "AAAAA="})
    with pytest.raises(WebhookVerificationError):
        ref.verify(body, bad_sig)
    for offset in (-360, 360):  # six minutes either way: outside the five-minute tolerance
        stale = webhooks.headers(secret, "msg_1", body, timestamp=int(time.time()) + offset)
        with pytest.raises(WebhookVerificationError):
            ref.verify(body, stale)
        assert not webhooks.verify(secret, stale, body)
    # ... and one minute off is inside it (the refusals above are for the time, not the signature)
    ref.verify(body, webhooks.headers(secret, "msg_1", body, timestamp=int(time.time()) - 60))


def test_old_url_safe_secrets_are_rewritten_to_the_same_key(db):
    old_secrets = []
    while len(old_secrets) < 3:  # ones the reference cannot decode: URL-safe characters present
        s = "whsec_" + secrets.token_urlsafe(32)
        if re.search(r"[-_]", s[6:]):
            old_secrets.append(s)
    ids = []
    body = b'{"old": true}'
    before = {}
    for s in old_secrets:
        ws = workspaces.get_or_create_workspace(db, f"oldsecret-{secrets.token_hex(6)}")
        db.execute("UPDATE workspaces SET webhook_secret = %s WHERE id = %s", (s, ws.id))
        ids.append(ws.id)
        before[ws.id] = webhooks.headers(s, "msg_old", body)  # signed with the old string
        # The hole: the reference drops the URL-safe characters, then fails to decode or misreads the key.
        with pytest.raises((WebhookVerificationError, binascii.Error)):
            Webhook(s).verify(body, before[ws.id])
    not_base64 = workspaces.get_or_create_workspace(db, f"oldsecret-{secrets.token_hex(6)}")
    db.execute("UPDATE workspaces SET webhook_secret = 'whsec_not base64!' WHERE id = %s", (not_base64.id,))

    (sql,) = [text for version, _, text in migration_files() if version == 14]
    db.execute(sql)  # applied at start-up already; it is idempotent, so run it again over the old rows

    for ws_id, old in zip(ids, old_secrets, strict=True):
        new = workspaces.webhook_secret(db, ws_id)
        _assert_standard(new)
        assert webhooks._key(new) == webhooks._key(old)
        Webhook(new).verify(body, before[ws_id])  # a signature made before the rewrite verifies
        after = webhooks.headers(new, "msg_new", body)
        assert webhooks.verify(old, after, body)  # a receiver that kept the old string still verifies
    assert workspaces.webhook_secret(db, not_base64.id) == "whsec_not base64!"
