"""Fixtures of the FFI suite: a real `converge serve` child process on loopback, tokens, and the
generated Python bindings of libconverge_ffi (the same surface Swift gets).

Environment (set by the Rust test that runs this suite, `ffi/tests/it/python.rs`):
CONVERGE_BIN (the `converge` binary), CONVERGE_FFI_BINDINGS (the folder holding converge_ffi.py
beside libconverge_ffi.so).
"""

import os
import subprocess
import sys
import threading
import time

import pytest

SECRET = "ffi-suite-secret"


def _need(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run this suite through `cargo test -p converge-ffi` "
                    "(after `cargo build -p converge-cli -p converge-uniffi-bindgen`)", returncode=2)
    return value


sys.path.insert(0, _need("CONVERGE_FFI_BINDINGS"))
BIN = _need("CONVERGE_BIN")

import converge_ffi as cf  # noqa: E402


class Server:
    """A `converge serve` child process; `restart()` keeps its ports and database."""

    def __init__(self, tmp, *extra):
        self.db = os.path.join(tmp, "server.db")
        self.extra = list(extra)
        self.http_port = 0
        self.grpc_port = 0
        self.proc = None
        self.start()

    def start(self):
        args = [BIN, "serve", "--db", self.db, "--listen", f"127.0.0.1:{self.http_port}",
                "--grpc-listen", f"127.0.0.1:{self.grpc_port}", "--jwt-secret", SECRET, *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "CONVERGE_LOG": "warn"})
        deadline = time.time() + 30
        for line in self.proc.stdout:
            if "http://127.0.0.1:" in line:
                self.http_port = int(line.split("http://127.0.0.1:")[1].split()[0].strip("/"))
            if "grpc://127.0.0.1:" in line:
                self.grpc_port = int(line.split("grpc://127.0.0.1:")[1].split()[0].strip("/"))
                break
            if time.time() > deadline:
                raise RuntimeError("converge serve did not say it was listening")
        else:
            raise RuntimeError(f"converge serve exited: {self.proc.wait()}")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def restart(self):
        self.stop()
        self.start()

    def url(self, wire):
        return f"http://127.0.0.1:{self.http_port}" if wire == "http" else f"grpc://127.0.0.1:{self.grpc_port}"


def token(tenant, user="alice", secret=SECRET, ttl="1h"):
    out = subprocess.run([BIN, "token", "--tenant", tenant, "--user", user, "--ttl", ttl, "--jwt-secret", secret],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Tokens(cf.TokenProvider):
    """A token provider that counts its calls; `first` is handed out until a refresh."""

    def __init__(self, tenant, first=None, refuse_refresh=False):
        self.tenant = tenant
        self.current = first or token(tenant)
        self.refuse_refresh = refuse_refresh
        self.tokens = 0
        self.refreshes = 0
        self.threads = set()

    def token(self):
        self.tokens += 1
        self.threads.add(threading.current_thread().name)
        return self.current

    def refresh(self):
        self.refreshes += 1
        if self.refuse_refresh:
            raise cf.TokenError.SignInRequired(message="the user signed out")
        self.current = token(self.tenant)
        return self.current


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("server")))
    yield srv
    srv.stop()


@pytest.fixture(params=["http", "grpc"])
def wire(request):
    return request.param


_tenants = iter(range(1_000_000))


@pytest.fixture
def tenant(request):
    return f"t{next(_tenants)}-{os.getpid()}"


def open_client(tmp_path, name, url, tokens, **options):
    return cf.ConvergeClient.open(str(tmp_path / f"{name}.db"), url, tokens, cf.ClientOptions(**options))


def wait_for(what, check, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
