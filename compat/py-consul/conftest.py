"""Our stand-in for py-consul's root conftest.py (which starts Docker containers).

`cargo xtask compat` copies this file over the sdist's root conftest.py. It keeps the upstream
fixture names and semantics -- a fresh single-node dev agent per test -- but runs a local binary:

- COMPAT_BACKEND=sim     `consul-ha agent -dev --http-addr 127.0.0.1:PORT`
- COMPAT_BACKEND=consul  `consul agent -dev` (real Consul), fresh ports, dns and grpc off

Other settings (all set by the xtask):
- COMPAT_AGENT_BIN   the binary to run
- COMPAT_PORT_BASE   first port of a block of 100 this run may use
- COMPAT_LOG_DIR     where each test's agent log (.log) and HTTP exchanges (.http) go
- COMPAT_SKIPS       the skip list (tab-separated: node id or prefix, reason)
- COMPAT_RESULTS     where to write {node id: {"outcome", "reason"}} as JSON at the end
- COMPAT_STRICT_SKIPS=1  every skip-list entry must match a collected test (whole-suite runs)
- COMPAT_NETNS=1     we run in a private network namespace (`unshare --net`): bring up its
                     loopback and serve the stand-in on :8500

Upstream's agents listen on 8500 inside their container and some tests register HTTP checks
against http://localhost:8500 (the agent's own UI, which answers 200). When we run in a private
network namespace we answer 200 on 127.0.0.1:8500 and [::1]:8500 ourselves, so those checks
pass as they do upstream; the agents under test listen on ports of our own block.
"""

from __future__ import annotations

import collections
import fcntl
import http.server
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import typing

import pytest
import requests

BACKEND = os.environ.get("COMPAT_BACKEND", "sim")
AGENT_BIN = os.environ.get("COMPAT_AGENT_BIN", "")
PORT_BASE = int(os.environ.get("COMPAT_PORT_BASE", "19100"))
LOG_DIR = os.environ.get("COMPAT_LOG_DIR", os.path.join(os.path.dirname(__file__), "logs"))
SKIPS = os.environ.get("COMPAT_SKIPS", "")
RESULTS = os.environ.get("COMPAT_RESULTS", "")
NETNS = os.environ.get("COMPAT_NETNS") == "1"
READY_TIMEOUT = 30.0

# Same shape as upstream's, so tests reading `.port`, `.version` (or `.container`) keep working.
ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])

_next_port = [PORT_BASE]


def _loopback_up() -> None:
    """A new network namespace starts with `lo` down; bring it up (as `ip link set lo up`)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, siocgifflags, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifreq)[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


if NETNS:
    _loopback_up()


def _free_port() -> int:
    """The next port of our block that nothing listens on (we run one agent at a time)."""
    for _ in range(100):
        port = _next_port[0]
        _next_port[0] = PORT_BASE + (port + 1 - PORT_BASE) % 100
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {PORT_BASE}..{PORT_BASE + 99}")


def _command(http: int) -> list[str]:
    if BACKEND == "sim":
        # The same agent options as Consul's below: script checks on.
        return [
            AGENT_BIN, "agent", "-dev", "--http-addr", f"127.0.0.1:{http}", "--node", "compat-node",
            "--enable-script-checks",
        ]  # fmt: skip
    serf_lan, serf_wan, server = _free_port(), _free_port(), _free_port()
    # Upstream's config minus what 1.8.7 does not know (https, grpc_tls are off anyway).
    hcl = (
        f"ports {{ http = {http}, dns = -1, grpc = -1, serf_lan = {serf_lan}, serf_wan = {serf_wan},"
        f" server = {server} }}\n"
        "performance { raft_multiplier = 1 }\n"
        "enable_script_checks = true\n"
    )
    return [
        AGENT_BIN, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
        "-node", "compat-node", "-hcl", hcl,
    ]  # fmt: skip


def _ready(base: str) -> bool:
    try:
        leader = requests.get(base + "status/leader", timeout=2)
        if leader.status_code != 200 or not leader.json():
            return False
        if BACKEND == "sim":
            return True
        # Go's own test harness waits for this: the leader has registered its node.
        nodes = requests.get(base + "catalog/nodes", timeout=2)
        return nodes.status_code == 200 and int(nodes.headers.get("X-Consul-Index", "0")) >= 2
    except (requests.RequestException, ValueError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_agent(name: str):
    if not AGENT_BIN:
        raise RuntimeError("COMPAT_AGENT_BIN is not set; run this through `cargo xtask compat`")
    os.makedirs(LOG_DIR, exist_ok=True)
    http = _free_port()
    log = open(os.path.join(LOG_DIR, f"{name}.log"), "wb")  # noqa: SIM115 -- closed in teardown
    proc = subprocess.Popen(_command(http), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http}/v1/"
    deadline = time.monotonic() + READY_TIMEOUT
    while not _ready(base):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            log.close()
            raise RuntimeError(f"{BACKEND} agent on port {http} not ready (see {log.name})")
        time.sleep(0.05)
    return proc, log, http


_trace: dict[str, typing.IO[str] | None] = {"file": None}
_send = requests.Session.send


def _one_line(content: bytes) -> str:
    """A response body on one line, JSON re-encoded with sorted keys (diffable across backends)."""
    text = content.decode("utf-8", "replace")
    try:
        text = json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        text = text.replace("\n", "\\n")
    return text[:4000]


def _traced_send(self, request, **kwargs):
    """requests' send, also writing each exchange to the running test's .http file."""
    response = _send(self, request, **kwargs)
    out = _trace["file"]
    if out is not None:
        body = request.body.decode("utf-8", "replace") if isinstance(request.body, bytes) else request.body
        out.write(f"> {request.method} {request.url}\n")
        if body:
            out.write(f"> {body}\n")
        out.write(f"< {response.status_code} {_one_line(response.content)}\n\n")
        out.flush()
    return response


requests.Session.send = _traced_send


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture(scope="session", autouse=True)
def _stand_in_on_8500():
    """In our own network namespace, answer 200 where upstream's agent would be (see above)."""
    servers = []
    if NETNS:
        for cls, addr in ((http.server.ThreadingHTTPServer, "127.0.0.1"), (_V6Server, "::1")):
            try:
                servers.append(cls((addr, 8500), _Ok))
            except OSError:
                pass
        for s in servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
    yield
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():
    if "CONSUL_HTTP_TOKEN" in os.environ:
        del os.environ["CONSUL_HTTP_TOKEN"]


@pytest.fixture
def consul_instance(request):
    """A fresh dev agent for this test, stopped (by its PID) after it."""
    proc, log, port = _start_agent(request.node.name)
    try:
        version = requests.get(f"http://127.0.0.1:{port}/v1/agent/self", timeout=10).json()["Config"]["Version"]
        # Each test's requests and answers (sync client only) go to LOG_DIR/<test>.http.
        _trace["file"] = open(os.path.join(LOG_DIR, f"{request.node.name}.http"), "w", encoding="utf-8")  # noqa: SIM115
        yield ConsulInstance(proc, port, version.strip())
    finally:
        if _trace["file"] is not None:
            _trace["file"].close()
            _trace["file"] = None
        _stop(proc)
        log.close()


@pytest.fixture
def acl_consul_instance(request):
    pytest.fail("this test needs an ACL-enabled agent: it belongs in the skip list")


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version


def _load_skips() -> list[tuple[str, str]]:
    out = []
    if SKIPS:
        with open(SKIPS, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip() or line.startswith("#"):
                    continue
                nodeid, _, reason = line.partition("\t")
                out.append((nodeid.strip(), reason.strip()))
    return out


def pytest_collection_modifyitems(config, items) -> None:
    skips = _load_skips()
    used = set()
    for item in items:
        for prefix, reason in skips:
            if item.nodeid == prefix or item.nodeid.startswith(prefix + "::") or (
                prefix.endswith(".py") and item.nodeid.startswith(prefix)
            ):
                item.add_marker(pytest.mark.skip(reason=reason))
                used.add(prefix)
                break
    stale = [p for p, _ in skips if p not in used]
    if stale and os.environ.get("COMPAT_STRICT_SKIPS") == "1":
        raise pytest.UsageError(f"skip list entries that match no test: {stale}")


_results: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report) -> None:
    entry = _results.setdefault(report.nodeid, {"outcome": "passed", "reason": ""})
    if report.skipped:
        entry["outcome"] = "skipped"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        entry["reason"] = reason.removeprefix("Skipped: ")
    elif report.failed and entry["outcome"] != "failed":
        entry["outcome"] = "failed"
        crash = getattr(report.longrepr, "reprcrash", None)
        entry["reason"] = f"{report.when}: {crash.message if crash else report.longrepr}"[:500]


def pytest_sessionfinish(session, exitstatus) -> None:
    if RESULTS:
        with open(RESULTS, "w", encoding="utf-8") as f:
            json.dump(_results, f, indent=1, sort_keys=True)
