"""Certificates verify with nothing but the public keys from /api/v1/compliance/keys; edits,
deletions and reordering are detected; after `warden rotate-signing-key` old ones still verify."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

from guard import verify_chain
from tests.workers.conftest import add_doc, events, submit, wait_terminal


def _run(client) -> tuple[str, list[dict]]:
    add_doc(client, "notes", "Quarterly notes. Nothing sensitive here.")
    eid = submit(client, task="Summarize the notes and save it as 'notes-summary'")
    e = wait_terminal(client, eid)
    assert e["status"] == "succeeded", e
    certs = client.get(f"/api/v1/executions/{eid}/certificates").json()["items"]
    assert len(certs) == e["counts"]["certificates"] >= 3
    return eid, certs


def test_chain_verifies_with_public_keys_only(stack, client):
    eid, certs = _run(client)
    keys = client.get("/api/v1/compliance/keys").json()
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["kid"] and k["x"] for k in keys["keys"])
    assert verify_chain(certs, keys) == []
    assert [c["seq"] for c in certs] == list(range(1, len(certs) + 1))
    assert certs[0]["prev_hash"] is None and certs[1]["prev_hash"] == certs[0]["hash"]
    # The same certificates were streamed as events.
    streamed = [x["data"]["certificate"] for x in events(client, eid) if x["type"] == "certificate.issued"]
    assert streamed == certs

    edited = copy.deepcopy(certs)
    edited[1]["tool"] = "send_email"
    assert {p.code for p in verify_chain(edited, keys)} >= {"hash_mismatch"}
    assert {p.code for p in verify_chain(certs[:1] + certs[2:], keys)} >= {"seq_mismatch", "prev_hash_mismatch"}
    assert verify_chain([certs[1], certs[0], *certs[2:]], keys)
    assert verify_chain(certs, {"keys": []})  # no key, no trust


def test_rotation_keeps_old_keys_listed(stack, client, settings):
    _, before = _run(client)
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "WARDEN_SECRET_KEY": settings.secret_key}
    env.pop("WARDEN_SIGNING_KEY", None)
    out = subprocess.run([sys.executable, "-m", "warden.cli", "rotate-signing-key"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    _, after = _run(client)
    assert before[0]["key_id"] != after[0]["key_id"]
    keys = client.get("/api/v1/compliance/keys").json()
    kids = [k["kid"] for k in keys["keys"]]
    assert before[0]["key_id"] in kids and after[0]["key_id"] in kids
    assert verify_chain(before, keys) == [] and verify_chain(after, keys) == []
