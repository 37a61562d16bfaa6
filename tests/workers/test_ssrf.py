"""SSRF corpus, at registration and at delivery, for webhooks and the ``http_*`` tools.

Rule: only globally routable addresses, checked on the address actually connected to. Every
corpus URL names one port, watched two ways: a listener on 127.0.0.1 and ::1 counts the
connections that arrive, and a ``socket.connect`` audit hook counts every attempt the process
makes to that port, whatever the address (10.0.0.1 has no listener here, an attempt still counts).
Both must stay at 0.

The outside world is simulated at the OS seams only: ``socket.getaddrinfo`` answers for a few
test names (a public address once then a private one: DNS rebinding), and a connection to the
one "public" address is routed to a local TLS server (certificate from a test CA that
``SSL_CERT_FILE`` makes trusted), which answers 302 to an internal address.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared import safehttp
from tests.support import ApiClient, LiveServer, wait_for
from tests.workers.signals_helpers import alerts_of, make_task, send

PUBLIC = "93.184.216.34"  # globally routable; the test's network routes it to the local TLS server


class Watch:
    """Connections to one port: accepted by a loopback listener, attempted by this process."""

    def __init__(self) -> None:
        self.accepted = 0
        self.attempts: list[Any] = []
        self.recording = False
        self._socks = [socket.create_server(("127.0.0.1", 0))]
        self.port = self._socks[0].getsockname()[1]
        if socket.has_ipv6:
            # Without an IPv6 loopback on this machine the audit hook still counts attempts.
            with contextlib.suppress(OSError):
                self._socks.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        for s in self._socks:
            threading.Thread(target=self._accept, args=(s,), daemon=True, name="ssrf-listener").start()
        sys.addaudithook(self._audit)  # cannot be removed; it only records while `recording`

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.recording and event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == self.port:
                self.attempts.append(address)

    def close(self) -> None:
        self.recording = False
        for s in self._socks:
            s.close()


@pytest.fixture(scope="module")
def watch() -> Iterator[Watch]:
    w = Watch()
    yield w
    w.close()


@pytest.fixture()
def counted(watch: Watch) -> Iterator[Watch]:
    watch.accepted, watch.attempts, watch.recording = 0, [], True
    yield watch
    watch.recording = False
    assert watch.attempts == [], f"connection attempts to the watched port: {watch.attempts}"
    assert watch.accepted == 0


def corpus(port: int) -> list[str]:
    hosts = [
        "127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST.", "sub.localhost", "0.0.0.0", "0", "[::1]", "[::]",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "[::127.0.0.1]",
        "169.254.169.254", "[::ffff:169.254.169.254]", "10.0.0.1", "10.255.255.254", "172.16.0.1",
        "172.31.255.254", "192.168.0.1", "192.168.255.254", "100.64.0.1", "100.127.255.254", "198.18.0.1",
        "198.19.255.254", "[fc00::1]", "[fd12:3456:789a::1]", "[fe80::1]", "[fe80::1%25lo]",
        # 6to4 (2002:v4::/48) and NAT64 (64:ff9b::v4, 64:ff9b:1::/48) forms of internal addresses
        "[2002:7f00:1::1]", "[2002:a00:1::1]", "[2002:a9fe:a9fe::1]", "[2002:c0a8:1::1]", "[2002:6440:1::1]",
        "[64:ff9b::127.0.0.1]", "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b::a00:1]",
        "[64:ff9b::6440:1]", "[64:ff9b:1::a00:1]",
        # integer, octal, hex and short forms the resolver accepts
        "2130706433", "0177.0.0.1", "0x7f000001", "0x7f.0.0.1", "0x7F.1", "127.1", "017700000001",
        "167772161", "0xa9fea9fe", "0251.0376.0251.0376",
        # other non-global space: multicast, broadcast, reserved, documentation, Teredo
        "224.0.0.1", "255.255.255.255", "240.0.0.1", "192.0.2.1", "192.0.0.8", "[ff02::1]",
        "[2001:db8::1]", "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    ]
    urls = [f"https://{h}:{port}/hook" for h in hosts]
    urls += [f"http://127.0.0.1:{port}/hook", "file:///etc/passwd", f"gopher://127.0.0.1:{port}/_x",
             f"ftp://127.0.0.1:{port}/x", f"dict://127.0.0.1:{port}/x", f"https://user:pw@{PUBLIC}:{port}/"]
    return urls


# -- the simulated network ------------------------------------------------------------------------

class Network:
    def __init__(self, tmp: Path) -> None:
        self.answers: dict[str, list[list[str]]] = {}  # name -> successive answers
        self.lookups: list[str] = []
        self._tls, self.ca_file = _tls_server_context(tmp)
        self.redirect_to = ""
        self.public_hits = 0
        net = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                net.public_hits += 1
                self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                self.send_response(302)
                self.send_header("location", net.redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = _answer  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = self._tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="public-server").start()

    def getaddrinfo(self, real: Any) -> Any:
        def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if isinstance(name, str) and name.endswith(".test"):
                self.lookups.append(name)
                queue = self.answers.get(name) or [[]]
                addresses = queue.pop(0) if len(queue) > 1 else queue[0]
                if not addresses:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                         (a, int(port or 0))) for a in addresses]
            return real(host, port, *args, **kwargs)
        return fake

    def create_connection(self, real: Any) -> Any:
        def route(address: Any, *args: Any, **kwargs: Any) -> Any:
            if address[0] == PUBLIC:  # the one public host of this little internet
                return real(("127.0.0.1", self.server.server_address[1]), *args, **kwargs)
            return real(address, *args, **kwargs)
        return route

    def close(self) -> None:
        self.server.shutdown()


def _tls_server_context(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warden test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "public.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("public.test"), x509.DNSName("rebind.test")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, ca_file


@pytest.fixture()
def network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Network]:
    net = Network(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(net.ca_file))  # read by ssl.create_default_context()
    monkeypatch.setattr(socket, "getaddrinfo", net.getaddrinfo(socket.getaddrinfo))
    monkeypatch.setattr(socket, "create_connection", net.create_connection(socket.create_connection))
    yield net
    net.close()


# -- helpers --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_server(settings: Any) -> Iterator[LiveServer]:
    """The API with private targets refused (the session's server allows them for other tests)."""
    from api.app import create_app

    srv = LiveServer(create_app(settings.with_overrides(allow_private_webhooks=False)))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def strict_worker(celery_app: Any) -> Iterator[None]:
    saved = celery_app.conf.warden_settings
    celery_app.conf.warden_settings = saved.with_overrides(allow_private_webhooks=False)
    yield
    celery_app.conf.warden_settings = saved


def _deliver_everywhere(url: str, settings: Any) -> list[str]:
    """Every outbound path at use time; returns what each said. None may connect."""
    from workers import tools
    from workers.delivery import post

    said = []
    for method in ("GET", "POST"):
        with pytest.raises(safehttp.UnsafeTarget) as refused:
            safehttp.request(method, url, body=b"{}" if method == "POST" else None, allow_private=False,
                             follow_redirects=True, timeout=2)
        said.append(str(refused.value))
    ctx = tools.ToolContext(workspace_id="ws_x", execution_id="exec_x", call_key="k",
                            settings=settings.with_overrides(allow_private_webhooks=False))
    for name, args in (("http_get", {"url": url}), ("http_post", {"url": url, "body": "x"})):
        with pytest.raises(tools.ToolError) as err:
            tools.TOOLS[name](args, ctx)
        assert err.value.code == "unsafe_target", (name, url, err.value)
    got = post(url, b"{}", "whsec_eA==", "msg_1", allow_private=False, deadline_s=5)
    outcome, code, error = got.kind, got.status_code, got.error
    assert (outcome, code) == ("refused", None) and "refused target" in (error or ""), (url, outcome, error)
    return said


# -- the cases ------------------------------------------------------------------------------------

def test_corpus_refused_at_every_use(counted, settings):
    for url in corpus(counted.port):
        _deliver_everywhere(url, settings)
    # The same requests with the rule off do connect: the watch would see them (the test can fail).
    counted.recording = True
    with pytest.raises(safehttp.HttpError):
        safehttp.request("GET", f"https://127.0.0.1:{counted.port}/", allow_private=True, timeout=2)
    wait_for(lambda: counted.accepted == 1, timeout=5)
    assert len(counted.attempts) == 1
    counted.accepted, counted.attempts = 0, []


def test_corpus_refused_at_registration(stack, strict_server, counted, workspace):
    client = ApiClient(strict_server.url, workspace[1])
    task = make_task(client, "Tell me if ACME price goes above 200", "ACME")
    for url in corpus(counted.port):
        r = client.post("/api/v1/tasks", json={"task": "Say hello", "webhook_url": url})
        assert r.status_code == 422 and "webhook_url" in r.json()["detail"]["errors"], (url, r.text)
        r = client.post("/api/v1/tasks", json={"intent": "Tell me if ACME price goes above 200",
                                               "entity_scope": "ACME", "delivery": {"type": "webhook",
                                                                                    "endpoint": url}})
        assert r.status_code in (400, 422), (url, r.text)
        assert r.json()["detail"]["code"] in ("action_binding_failed", "validation_error"), (url, r.text)
        r = client.patch(f"/api/v1/tasks/{task['task_id']}", json={"delivery": {"type": "webhook", "endpoint": url}})
        assert r.status_code in (400, 422), (url, r.text)
    assert client.get("/api/v1/executions").json()["items"] == []
    assert [t["task_id"] for t in client.get("/api/v1/tasks").json()["items"]] == [task["task_id"]]


def test_redirect_to_an_internal_address_is_not_followed(network, counted, settings):
    from workers import tools
    from workers.delivery import post

    network.answers["public.test"] = [[PUBLIC]]
    network.answers["internal.test"] = [["10.0.0.1"]]
    ctx = tools.ToolContext(workspace_id="ws_x", execution_id="exec_x", call_key="k",
                            settings=settings.with_overrides(allow_private_webhooks=False))
    start = f"https://public.test:{counted.port}/start"
    for target in (f"https://127.0.0.1:{counted.port}/", f"http://127.0.0.1:{counted.port}/",
                   f"https://[::ffff:127.0.0.1]:{counted.port}/", f"https://internal.test:{counted.port}/",
                   f"https://2130706433:{counted.port}/", f"https://localhost:{counted.port}/", "file:///etc/passwd"):
        network.redirect_to = target
        hits = network.public_hits
        # GET follows redirects, checking each target again: refused at the second hop.
        with pytest.raises(safehttp.UnsafeTarget):
            safehttp.request("GET", start, allow_private=False, follow_redirects=True, timeout=5)
        with pytest.raises(tools.ToolError) as err:
            tools.TOOLS["http_get"]({"url": start}, ctx)
        assert err.value.code == "unsafe_target", err.value
        # POST (http_post, webhooks) never follows one: the 302 is the answer.
        assert tools.TOOLS["http_post"]({"url": start, "body": "x"}, ctx)["status"] == 302
        got = post(start, b"{}", "whsec_eA==", "m", allow_private=False, deadline_s=5)
        outcome, code, error = got.kind, got.status_code, got.error
        assert (outcome, code) == ("retry", 302) and "redirect not followed" in (error or "")
        assert network.public_hits == hits + 4  # the public first hop was reached each time


def test_dns_rebinding_checked_on_the_address_connected_to(network, counted, settings):
    # Public at the first lookup, private at the next: each use resolves once and connects to
    # exactly the address it checked, so the private answer is refused and never connected to.
    port = counted.port
    network.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"], ["127.0.0.1"], ["127.0.0.1"], ["127.0.0.1"],
                                      ["127.0.0.1"], ["127.0.0.1"]]
    network.redirect_to = "https://example.invalid/"  # the public hop answers; no redirect is followed
    first = safehttp.request("POST", f"https://rebind.test:{port}/h", body=b"{}", allow_private=False, timeout=5)
    assert first.status == 302 and network.public_hits == 1
    _deliver_everywhere(f"https://rebind.test:{port}/h", settings)
    # One answer with a public and a private address: refused as a whole.
    network.answers["mixed.test"] = [[PUBLIC, "10.0.0.1"]]
    network.answers["mixed6.test"] = [[PUBLIC, "::1"]]
    for name in ("mixed.test", "mixed6.test"):
        _deliver_everywhere(f"https://{name}:{port}/h", settings)
    assert network.public_hits == 1


def test_webhooks_refused_end_to_end_at_delivery(stack, client, network, counted, strict_worker):
    """Bound while the name was public (names are accepted at binding), refused when it turned private;
    and an execution webhook registered before the rule was on is refused by the worker."""
    port = counted.port
    network.answers["rebind.test"] = [["127.0.0.1"]]
    task = make_task(client, "Tell me if ROUTE price goes above 200", "ROUTE",
                     {"type": "webhook", "endpoint": f"https://rebind.test:{port}/hook"})
    send(client, "ROUTE", "price", [(0, 250)])
    alert = wait_for(lambda: next((a for a in alerts_of(client, task["task_id"])
                                   if a["delivery"]["status"] == "failed"), None), timeout=20)
    assert "refused target" in alert["delivery"]["attempts"][0]["error"]
    assert "rebind.test" in network.lookups

    r = client.post("/api/v1/tasks", json={"task": "Say hello", "webhook_url": f"https://[::ffff:7f00:1]:{port}/h"})
    assert r.status_code == 201, r.text  # the session's API allows private targets
    eid = r.json()["execution_id"]
    hook = wait_for(lambda: (w := client.get(f"/api/v1/executions/{eid}").json().get("webhook"))
                    and w.get("attempt_count", 0) >= 1 and w, timeout=30)
    assert "refused target" in (hook.get("last_error") or ""), hook
