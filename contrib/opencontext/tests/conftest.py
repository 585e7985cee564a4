"""Real servers for the tests: a private nats-server with JetStream per test,
and for the end-to-end test a private redis-server and a chatbuf worker built
from this repository. A missing binary fails the test with what to install."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str, *extra: str) -> str:
    for candidate in (shutil.which(name), *extra):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found on PATH{' or at ' + ', '.join(extra) if extra else ''}: "
                f"install it (Debian: apt-get install -y {name}; or run ./scripts/ensure-deps.sh)",
                pytrace=False)


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before listening on {port}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} within {deadline}s:\n"
                f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class NatsServer:
    """A private nats-server with JetStream that a test can stop and start
    again on the same port and store."""

    def __init__(self, tmp_path: Path) -> None:
        self.binary = find_binary("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
        self.port = free_port()
        self.store = tmp_path / "jetstream"
        self.log = tmp_path / "nats-server.log"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                          "-sd", str(self.store)], stdout=out, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "nats-server", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path):
    server = NatsServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The URL of a private nats-server with JetStream."""
    return nats_server.url


@pytest.fixture
def redis_port(tmp_path: Path):
    """A private redis-server that keeps nothing on disk; yields its port."""
    binary = find_binary("redis-server", "/usr/bin/redis-server")
    port = free_port()
    log = tmp_path / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, "redis-server", log)
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def worker_binary(tmp_path_factory) -> str:
    """chatbuf's worker, built from this repository."""
    go = find_binary("go", "/usr/local/go/bin/go")
    out = tmp_path_factory.mktemp("bin") / "worker"
    res = subprocess.run([go, "build", "-o", str(out), "./cmd/worker"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"go build ./cmd/worker failed:\n{res.stdout}{res.stderr}", pytrace=False)
    return str(out)


@pytest.fixture
def worker(worker_binary: str, nats_url: str, redis_port: int, tmp_path: Path):
    """A chatbuf worker against the test's servers, flushing every 3 messages."""
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "REDIS_", "NATS_", "WORKER_"))}
    env.update({
        "NATS_URL": nats_url,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port),
        "METRICS_ADDR": "",
        "CHAT_BUFFER_SIZE": "3",
        "WORKER_CONCURRENCY": "2",
    })
    with open(log, "wb") as out:
        proc = subprocess.Popen([worker_binary], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield log
    finally:
        stop(proc)


@pytest.fixture
def shanghai_time():
    """Local time 8 hours ahead of UTC (OpenContext's home, as a POSIX TZ that
    needs no tzdata), so that naive local time differs from naive UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "CST-8"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()
