"""The Python MCP SDK (PyPI `mcp` 2.x, a client nobody here wrote) against the real `serve`.

One `awswhitelist serve` with two workers on an ephemeral loopback port is started for the whole
session (the binary is the one cargo built: target/debug/awswhitelist, or $AWSWL_BIN). The tests
drive it with `mcp.client.Client` over `streamable_http_client`, in both connect modes:

- "auto": the SDK probes `server/discover` at 2026-07-28 first; our server answers it, so the SDK
  adopts 2026-07-28 and never sends `initialize` (mcp.client._probe.negotiate_auto).
- "legacy": the `initialize` handshake; the SDK proposes its newest handshake revision
  (2025-11-25), which the server echoes. A client that declares no elicitation gets no Mcp-Session-Id (it is stateless
  across workers), so the SDK opens no GET stream after `notifications/initialized` and sends no
  DELETE on close (mcp.client.streamable_http: both happen only with a session id).

Every HTTP request is made on a fresh TCP connection (an httpx2 client that keeps no idle
connection), which is verified per request with httpcore's `trace` extension (a
`connect_tcp.complete` event for every request) and the local port of each connection. With two
workers behind SO_REUSEPORT, requests of one conversation then land on different workers, which
`service_status` reports (its `worker` field is the worker slot).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from conftest import Server

WORKERS = 2
# How many service_status calls at most to see more than one worker answer. Each call is on a new
# connection, accepted by whichever of the two workers gets to the shared socket first; N calls
# all landing on one worker is vanishingly unlikely at 40.
MAX_CALLS_FOR_TWO_WORKERS = 40


# --------------------------------------------------------------------------------------------
# The server (the harness is tests/python/conftest.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(start_server: Callable[..., Any]) -> Iterator[Server]:
    args = ["--bind", "127.0.0.1:0", "--workers", str(WORKERS), "--log-format", "json"]
    with start_server(args, WORKERS) as srv:
        yield srv
    errors = [line for line in srv.lines if '"level":"ERROR"' in line]
    assert not errors, "serve logged errors:\n" + "\n".join(errors)


# --------------------------------------------------------------------------------------------
# An HTTP client that records, for every request, whether it opened a new connection
# --------------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request the SDK made, and what became of it."""

    http_method: str
    rpc_method: str | None
    protocol_version_header: str | None
    connects: int = 0
    local_port: int | None = None
    status: int | None = None
    session_id: str | None = None


@dataclass
class Recorder:
    exchanges: list[Exchange] = field(default_factory=list)

    def client(self, *, new_connection_per_request: bool) -> httpx2.AsyncClient:
        async def on_request(request: httpx2.Request) -> None:
            rpc_method = None
            if request.method == "POST":
                try:
                    body = json.loads(request.content)
                    rpc_method = body.get("method") if isinstance(body, dict) else "<batch>"
                except ValueError:
                    rpc_method = "<unparsable>"
            exchange = Exchange(request.method, rpc_method, request.headers.get("mcp-protocol-version"))
            self.exchanges.append(exchange)

            async def trace(event: str, info: dict[str, Any]) -> None:
                if event == "connection.connect_tcp.complete":
                    exchange.connects += 1

            request.extensions["trace"] = trace
            request.extensions["awswl_exchange"] = exchange

        async def on_response(response: httpx2.Response) -> None:
            exchange = response.request.extensions["awswl_exchange"]
            exchange.status = response.status_code
            exchange.session_id = response.headers.get("mcp-session-id")
            stream = response.extensions.get("network_stream")
            if stream is not None:
                local = stream.get_extra_info("client_addr")
                exchange.local_port = local[1] if local else None

        limits = httpx2.Limits(max_keepalive_connections=0) if new_connection_per_request else httpx2.Limits()
        return httpx2.AsyncClient(
            limits=limits,
            timeout=httpx2.Timeout(30.0),
            event_hooks={"request": [on_request], "response": [on_response]},
        )

    def posts(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.http_method == "POST"]


def run(fn: Callable[[], Awaitable[None]]) -> None:
    anyio.run(fn)


async def connect_and(
    server: Server,
    mode: str,
    recorder: Recorder,
    body: Callable[[Client], Awaitable[None]],
    *,
    new_connection_per_request: bool = True,
) -> None:
    """Opens a Client in `mode` over the recorder's HTTP client and runs `body` with it."""
    async with recorder.client(new_connection_per_request=new_connection_per_request) as http:
        transport = streamable_http_client(server.url, http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:
            await body(client)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_auto_mode_negotiates_2026_07_28_through_server_discover(server: Server) -> None:
    recorder = Recorder()
    seen: dict[str, Any] = {}

    async def body(client: Client) -> None:
        seen["version"] = client.protocol_version
        seen["discover"] = client.session.discover_result
        seen["initialize"] = client.session.initialize_result
        seen["server_info"] = client.server_info
        seen["tools_capability"] = client.server_capabilities.tools

    run(lambda: connect_and(server, "auto", recorder, body))

    assert LATEST_MODERN_VERSION == "2026-07-28"
    assert seen["version"] == "2026-07-28"
    assert seen["initialize"] is None, "auto mode fell back to initialize"
    discover = seen["discover"]
    assert discover is not None
    assert "2026-07-28" in discover.supported_versions
    # The policy's rules, as the model will read them (generated from [policy]; defaults here).
    assert discover.instructions and "whitelist_add" in discover.instructions, discover
    assert "IPv4 /16" in discover.instructions, discover.instructions
    assert seen["tools_capability"] is not None
    assert seen["server_info"] is not None and seen["server_info"].name == "awswhitelist"
    # On the wire: one server/discover at 2026-07-28, and never an initialize.
    posts = recorder.posts()
    assert [e.rpc_method for e in posts] == ["server/discover"], recorder.exchanges
    assert posts[0].protocol_version_header == "2026-07-28"
    assert posts[0].status == 200
    assert all(e.http_method == "POST" for e in recorder.exchanges), recorder.exchanges


def test_legacy_mode_negotiates_the_latest_handshake_revision(server: Server) -> None:
    recorder = Recorder()
    seen: dict[str, Any] = {}

    async def body(client: Client) -> None:
        seen["version"] = client.protocol_version
        seen["initialize"] = client.session.initialize_result
        seen["discover"] = client.session.discover_result
        seen["server_info"] = client.server_info
        seen["ping"] = await client.session.send_ping()  # ping exists only in handshake revisions

    run(lambda: connect_and(server, "legacy", recorder, body))

    assert LATEST_HANDSHAKE_VERSION == "2025-11-25"
    assert seen["version"] == "2025-11-25"
    assert seen["initialize"] is not None and seen["initialize"].protocol_version == "2025-11-25"
    instructions = seen["initialize"].instructions
    assert instructions and "IPv4 /16" in instructions, seen["initialize"]
    assert seen["server_info"] is not None and seen["server_info"].name == "awswhitelist"
    assert not any(e.rpc_method == "server/discover" for e in recorder.exchanges), recorder.exchanges
    posts = recorder.posts()
    assert [e.rpc_method for e in posts[:2]] == ["initialize", "notifications/initialized"], posts
    assert posts[0].status == 200
    assert posts[1].status == 202
    # Stateless: no Mcp-Session-Id, hence no GET stream and no DELETE from the SDK.
    assert not [e for e in recorder.exchanges if e.session_id is not None], recorder.exchanges
    assert [e.http_method for e in recorder.exchanges] == ["POST"] * len(recorder.exchanges), recorder.exchanges


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_lists_tools_with_schemas(server: Server, mode: str) -> None:
    recorder = Recorder()
    listed: list[Any] = []

    async def body(client: Client) -> None:
        result = await client.list_tools()
        listed.extend(result.tools)
        assert result.next_cursor is None

    run(lambda: connect_and(server, mode, recorder, body))

    by_name = {t.name: t for t in listed}
    assert "service_status" in by_name, sorted(by_name)
    tool = by_name["service_status"]
    assert tool.description
    assert tool.input_schema["type"] == "object"
    assert tool.input_schema.get("properties") == {}
    assert tool.output_schema is not None
    assert tool.output_schema["type"] == "object"
    assert {"service", "version", "worker", "generation", "protocol_versions"} <= set(
        tool.output_schema["required"]
    )
    assert tool.annotations is not None and tool.annotations.read_only_hint is True
    assert any(e.rpc_method == "tools/list" and e.status == 200 for e in recorder.exchanges)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_calls_service_status(server: Server, mode: str) -> None:
    recorder = Recorder()
    results: list[Any] = []

    async def body(client: Client) -> None:
        results.append(await client.call_tool("service_status", {}))

    run(lambda: connect_and(server, mode, recorder, body))

    (result,) = results
    assert result.is_error is not True, result
    status = result.structured_content
    assert isinstance(status, dict), result
    assert status["service"] == "awswhitelist"
    assert isinstance(status["version"], str) and status["version"]
    assert status["worker"] in server.worker_slots, (status, server.worker_slots)
    assert isinstance(status["generation"], int) and status["generation"] >= 1
    assert {"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"} <= set(
        status["protocol_versions"]
    )
    assert result.content, "a tool result carries content too"
    call = [e for e in recorder.exchanges if e.rpc_method == "tools/call"]
    assert len(call) == 1 and call[0].status == 200, recorder.exchanges


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_one_conversation_spreads_over_workers_with_a_connection_per_request(server: Server, mode: str) -> None:
    recorder = Recorder()
    workers: list[int] = []

    async def body(client: Client) -> None:
        tools = await client.list_tools()
        assert "service_status" in {t.name for t in tools.tools}
        for _ in range(MAX_CALLS_FOR_TWO_WORKERS):
            result = await client.call_tool("service_status", {})
            assert result.is_error is not True, result
            assert result.structured_content is not None
            workers.append(result.structured_content["worker"])
            if len(set(workers)) > 1 and len(workers) >= 4:
                break

    run(lambda: connect_and(server, mode, recorder, body, new_connection_per_request=True))

    # Every HTTP request of the conversation opened its own TCP connection ...
    assert recorder.exchanges, "no HTTP request recorded"
    for e in recorder.exchanges:
        assert e.connects == 1, f"{e} reused a connection (all: {recorder.exchanges})"
        assert e.local_port is not None, e
    ports = [e.local_port for e in recorder.exchanges]
    assert len(set(ports)) == len(ports), f"a local port served two requests: {ports}"
    # ... and the conversation was answered by more than one worker.
    assert set(workers) <= server.worker_slots, (workers, server.worker_slots)
    assert len(set(workers)) > 1, f"every call landed on worker {workers[0]} ({len(workers)} calls)"


def test_keep_alive_control_reuses_one_connection(server: Server) -> None:
    """The control for the test above: with keep-alive the recorder sees connections reused, so
    its `connects == 1` on every request is a real observation, not an artefact."""
    recorder = Recorder()

    async def body(client: Client) -> None:
        for _ in range(5):
            await client.call_tool("service_status", {})

    run(lambda: connect_and(server, "auto", recorder, body, new_connection_per_request=False))

    posts = recorder.posts()
    assert len(posts) >= 6, posts
    assert sum(e.connects for e in posts) < len(posts), posts
    assert len({e.local_port for e in posts}) < len(posts), posts
