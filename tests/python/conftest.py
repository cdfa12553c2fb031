"""The server harness of the Python tests: a real `awswhitelist serve` on loopback.

`start_server(args, workers)` (a fixture) starts `awswhitelist serve ARGS` (the binary cargo
built: target/debug/awswhitelist, or $AWSWL_BIN), with the caller's AWSWHITELIST_* variables
left out, reads its JSON log lines from stderr, and waits until it is ready: `listening` names
the address, `ready` says every worker is up (and how many). On leaving the `with` block, also
when a test failed, it is stopped with SIGTERM and waited for (SIGKILL to the supervisor and its
workers if it ignores SIGTERM for 30 s), and a graceful stop must exit 0.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def binary() -> Path:
    path = Path(os.environ.get("AWSWL_BIN", ROOT / "target" / "debug" / "awswhitelist"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it first (cargo build; scripts/test does)")
    return path


def clean_env() -> dict[str, str]:
    """The environment without AWSWHITELIST_*: every such variable is a config key for the
    service, and an unknown one is an error."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWSWHITELIST_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running `awswhitelist serve`, its JSON log lines collected from stderr by a thread."""

    def __init__(self, args: list[str], workers: int, env: dict[str, str] | None = None) -> None:
        self.workers = workers
        self.proc = subprocess.Popen(
            [str(binary()), "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**clean_env(), **(env or {})},
            # A group of its own: a supervisor that ignores SIGTERM is killed with its workers.
            process_group=0,
        )
        self.lines: list[str] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.addr: str | None = None
        self.ready: dict[str, Any] | None = None
        self.worker_slots: set[int] = set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(event)

    def wait_ready(self) -> None:
        """Waits for `listening` (the address) and then `ready` (every worker up) in the log."""
        deadline = time.monotonic() + READY_TIMEOUT
        while self.ready is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"serve not ready within {READY_TIMEOUT}s; log:\n{self.log_tail()}")
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"serve exited with {self.proc.returncode} before ready; log:\n{self.log_tail()}"
                    ) from None
                continue
            kind = event.get("event")
            if kind == "listening" and self.addr is None:
                self.addr = event.get("addr")
            elif kind == "worker_ready":
                self.worker_slots.add(int(event["worker"]))
            elif kind == "ready":
                self.ready = event
        assert self.addr and self.addr.startswith("127.0.0.1:"), f"listening addr: {self.addr!r}"
        assert self.ready.get("workers") == self.workers, self.ready

    @property
    def url(self) -> str:
        return f"http://{self.addr}/mcp"

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self) -> int:
        """SIGTERM (graceful stop) and the exit code; SIGKILL to the whole group if it does not
        stop in time (then an AssertionError)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"serve ignored SIGTERM for {STOP_TIMEOUT}s; log:\n{self.log_tail()}") from None
        finally:
            self._reader.join(timeout=5)


    def events_named(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log line so far whose `event` is `name`, in order."""
        found = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (event.get("event") == name or event.get("fields", {}).get("event") == name):
                found.append(event)
        return found


@contextmanager
def running_server(args: list[str], workers: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    srv = Server(args, workers, env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
    assert code == 0, f"serve exited with {code} after SIGTERM; log:\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def start_server() -> Callable[..., AbstractContextManager[Server]]:
    """`with start_server(args, workers[, env]) as srv:` a ready server, stopped on leaving."""
    return running_server


class Moto:
    """A real `moto_server` on loopback (EC2/STS), as tests/common/moto.rs starts it."""

    def __init__(self) -> None:
        program = os.environ.get("AWSWL_MOTO_SERVER", "moto_server")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [program, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Fake credentials, made here for moto (which accepts any): nobody's keys.
        self.env = {
            "AWS_ACCESS_KEY_ID": "AKIA" + "".join(f"{b:02X}" for b in os.urandom(8)),
            "AWS_SECRET_ACCESS_KEY": os.urandom(20).hex(),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto_server did not come up on port {self.port}") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ec2(self) -> Any:
        import boto3

        return boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def ingress(self, group: str) -> list[tuple[str, int]]:
        """(cidr, from port) of every ingress rule of `group`."""
        rules = self.ec2().describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
        return sorted(
            (r.get("CidrIpv4") or r.get("CidrIpv6") or "", r["FromPort"])
            for r in rules["SecurityGroupRules"]
            if not r["IsEgress"]
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    """A moto server for the session, stopped at its end."""
    m = Moto()
    try:
        yield m
    finally:
        m.stop()
