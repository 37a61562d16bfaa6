"""Network namespaces as hosts: create them, join them to one bridge, cut and restore their
links, kill everything inside one, and enter one from a thread of this process.

Only names with the fleet's prefix and addresses on the fleet's own bridge are touched. The
bridge has no address in the root namespace, so nothing in the fleet can reach anything else on
the machine, and nothing outside the fleet reaches in.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

PREFIX = "wdnf-"  # namespaces and the bridge-side ends of their veth pairs
BRIDGE = "wdnfleet0"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


# `ip` runs from one thread that stays in the namespace this module was imported in (the
# machine's): a child process inherits its parent thread's namespace, and the thread driving a
# fleet lives in the client host's.
_outside = ThreadPoolExecutor(1, thread_name_prefix="netns-outside")
_outside.submit(lambda: None).result()


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _outside.submit(subprocess.run, ["ip", *args], capture_output=True, text=True, check=check,
                           timeout=30).result()


def unavailable_reason() -> str | None:
    """Why this machine cannot build the fleet (None when it can): root, iproute2, network
    namespaces, veth pairs and a bridge are all needed."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe_ns, probe_br = f"{PREFIX}probe", "wdnfprobe0"
    try:
        ip("netns", "add", probe_ns)
        ip("link", "add", probe_br, "type", "bridge")
    except (subprocess.CalledProcessError, OSError) as exc:
        err = (getattr(exc, "stderr", "") or str(exc)).strip().splitlines()
        return f"cannot create network namespaces and bridges here ({err[-1] if err else exc})"
    finally:
        ip("link", "del", probe_br, check=False)
        ip("netns", "del", probe_ns, check=False)
    return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class ThreadInNetns:
    """Move the calling thread into a namespace (and back with :meth:`leave`). Sockets keep the
    namespace they were created in; threads started meanwhile inherit it."""

    def __init__(self, name: str) -> None:
        self._own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)

    def leave(self) -> None:
        if self._own >= 0:
            _setns(self._own)
            os.close(self._own)
            self._own = -1


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """The calling thread inside namespace ``name`` for the block."""
    moved = ThreadInNetns(name)
    try:
        yield
    finally:
        moved.leave()


def pids(name: str) -> list[int]:
    out = ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split()]


def kill_all(name: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to every process whose network namespace is ``name``; the number signalled."""
    n = 0
    for pid in pids(name):
        if pid == os.getpid():  # this process's main thread may live in the client namespace
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            n += 1
    return n


def veth_name(host: str) -> str:
    return f"{PREFIX}{host}"[:15]


def create_bridge() -> None:
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("link", "set", BRIDGE, "up")


def add_host(host: str, address: str, prefix_len: int = 24) -> None:
    """A namespace named PREFIX+host with loopback up and eth0 at ``address`` on the bridge."""
    ns = PREFIX + host
    outer = veth_name(host)
    ip("netns", "add", ns)
    ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", outer, "master", BRIDGE)
    ip("link", "set", outer, "up")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")


def set_link(host: str, up: bool) -> None:
    """Cut (or restore) a host's only link at the bridge: its packets vanish silently, as when a
    switch port or a cable dies; the host's own interface and processes are untouched."""
    ip("link", "set", veth_name(host), "up" if up else "down")


def teardown_all() -> None:
    """Remove every namespace, veth and the bridge this module creates, killing whatever runs in
    them: this run's, or a crashed earlier run's."""
    listed = ip("netns", "list", check=False).stdout.split("\n")
    names = [line.split()[0] for line in listed if line.strip().startswith(PREFIX)]
    for ns in names:
        kill_all(ns)
    for ns in names:
        ip("netns", "del", ns, check=False)
    links = ip("-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        parts = line.split(":")
        if len(parts) > 1:
            dev = parts[1].strip().split("@")[0]
            if dev.startswith(PREFIX):
                ip("link", "del", dev, check=False)
    ip("link", "del", BRIDGE, check=False)
