"""A person in the loop, with the Python MCP SDK (PyPI `mcp` 2.x) as the client nobody here wrote.

`awswhitelist serve` with two workers and `[policy.consent] ports = [22]`, against a real moto.
The SDK's `Client` is given an elicitation callback (the "person"), which it advertises as the
`elicitation` capability:

- auto mode (2026-07-28): the server answers `tools/call` with an `InputRequiredResult`
  carrying an `elicitation/create` form and a sealed `requestState`; the SDK runs the callback
  and retries the call with the answer (mcp/client/_input_required.py). Every HTTP request is on
  a new connection, so the retry lands on either worker; the server logs which worker asked
  (`consent_asked`) and which received the answer (`consent_answer`), and at least one answer
  must have landed on another worker than its question.
- legacy mode (2025-11-25): the SDK declares elicitation at `initialize` and gets a signed
  `Mcp-Session-Id`; the server answers the `tools/call` POST with an event stream carrying
  `elicitation/create`; the SDK POSTs its answer (a new connection, so either worker), which the
  receiving worker routes, through the supervisor when it is not its own, to the worker holding
  the stream; the result follows on the stream. Again one answer must cross workers.

Accept puts the rule in moto; decline leaves moto as it was; both are in the audit log with the
decision. A client without a callback is refused when consent is needed, and served when not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitResult

from conftest import Moto, Server

WORKERS = 2
# Accepted adds at most, to see an answer land on another worker than its question (each pair
# is a coin toss between two workers; 20 heads in a row is vanishingly unlikely).
MAX_ROUNDS_FOR_TWO_WORKERS = 20


@pytest.fixture(scope="module")
def setup(start_server: Callable[..., Any], moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Moto, str, Path]]:
    state = tmp_path_factory.mktemp("state")
    group = moto.ec2().create_security_group(GroupName="consent-py", Description="consent")["GroupId"]
    config = tmp_path_factory.mktemp("config") / "awswhitelist.toml"
    config.write_text(
        f"""
workers = {WORKERS}
[aws]
endpoint_url = "{moto.url}"
region = "us-east-1"
[whitelist]
state_dir = "{state}"
[policy.consent]
ports = [22]
[log]
format = "json"
"""
    )
    args = ["--config", str(config), "--bind", "127.0.0.1:0"]
    with start_server(args, WORKERS, moto.env) as srv:
        yield srv, moto, group, state
    errors = [line for line in srv.lines if '"level":"ERROR"' in line]
    assert not errors, "serve logged errors:\n" + "\n".join(errors)


def person(action: str, confirm: bool | None = None) -> Any:
    """An elicitation callback that answers every question with `action`; it records the forms."""
    seen: list[Any] = []

    async def callback(context: Any, params: Any) -> ElicitResult:
        seen.append(params)
        content = None if confirm is None else {"confirm": confirm}
        return ElicitResult(action=action, content=content)

    callback.seen = seen  # type: ignore[attr-defined]
    return callback


async def call(server: Server, mode: str, args: dict[str, Any], callback: Any | None) -> Any:
    """One whitelist_add through a fresh Client in `mode`, every request on a new connection."""
    async with httpx2.AsyncClient(limits=httpx2.Limits(max_keepalive_connections=0), timeout=httpx2.Timeout(30.0)) as http:
        transport = streamable_http_client(server.url, http_client=http)
        async with Client(transport, mode=mode, cache=None, elicitation_callback=callback) as client:
            return await client.call_tool("whitelist_add", args)


def add(server: Server, mode: str, args: dict[str, Any], callback: Any | None) -> Any:
    result: dict[str, Any] = {}

    async def go() -> None:
        result["r"] = await call(server, mode, args, callback)

    anyio.run(go)
    return result["r"]


def ssh(group: str, ip: str) -> dict[str, Any]:
    return {"security_group_id": group, "ip_address": ip, "port": 22, "duration": "1h"}


def audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_accept_adds_the_rule_and_decline_changes_nothing(setup: tuple[Server, Moto, str, Path], mode: str) -> None:
    server, moto, group, state = setup
    octet = 10 if mode == "auto" else 110
    cross_worker = False
    for i in range(MAX_ROUNDS_FOR_TWO_WORKERS):
        ip = f"198.51.100.{octet + i}"
        asked_before = len(server.events_named("consent_asked"))
        yes = person("accept", True)
        r = add(server, mode, ssh(group, ip), yes)
        assert not r.is_error, text(r)
        assert (f"{ip}/32", 22) in moto.ingress(group)
        form = yes.seen[0]
        for part in [group, f"{ip}/32", "port 22", "tcp", "expires after 1h"]:
            assert part in form.message, (part, form.message)
        asked = server.events_named("consent_asked")[asked_before:]
        answered = server.events_named("consent_answer")
        assert len(asked) == 1, asked
        assert asked[0]["via"] == ("input_required" if mode == "auto" else "elicitation"), asked
        # The answer came on another request (the retry, or the POST of the JSON-RPC response):
        # which worker took it?
        if answered[-1]["worker"] != asked[0]["worker"]:
            cross_worker = True
            break
    assert cross_worker, "every answer landed on the worker that asked"

    before = moto.ingress(group)
    no = person("decline")
    r = add(server, mode, ssh(group, f"203.0.113.{octet}"), no)
    assert r.is_error and "declined" in text(r) and "nothing was changed" in text(r), text(r)
    assert moto.ingress(group) == before, "a decline changes nothing"

    decisions = [(e["result"], e["consent"]["decision"]) for e in audit(state) if e.get("consent") and e["rule"]["cidr_ip"] in (f"198.51.100.{octet}/32", f"203.0.113.{octet}/32")]
    assert ("added", "accepted") in decisions, decisions
    assert ("declined", "declined") in decisions, decisions


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_client_that_cannot_ask_is_refused_unless_no_consent_is_needed(setup: tuple[Server, Moto, str, Path], mode: str) -> None:
    server, moto, group, _ = setup
    before = moto.ingress(group)
    r = add(server, mode, ssh(group, "192.0.2.44" if mode == "auto" else "192.0.2.45"), None)
    assert r.is_error, text(r)
    assert "consent is required" in text(r) and "[policy.consent]" in text(r), text(r)
    assert moto.ingress(group) == before
    ip = "192.0.2.46" if mode == "auto" else "192.0.2.47"
    r = add(server, mode, {"security_group_id": group, "ip_address": ip, "port": 443, "duration": "1h"}, None)
    assert not r.is_error, text(r)
    assert (f"{ip}/32", 443) in moto.ingress(group)
