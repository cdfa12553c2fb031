"""Each group's audit history as MCP resources, and the group id as an `Mcp-Param-*` header,
with the Python MCP SDK (PyPI `mcp` 2.x) and raw HTTP against `awswhitelist serve` and moto.

Three groups in moto: two allowed by the policy, one not. `[mcp] page_size = 1`, so both the
resource list and the tool list come a page at a time.

- `resources/list` (SDK, 2026-07-28) pages through exactly the two allowed groups; raw, every page
  carries `ttlMs` and `cacheScope: "private"`.
- After a scripted add, add, remove through the SDK, `resources/read` of a group answers exactly
  that group's audit entries, newest first, the same as `whitelist_history` with its filter.
- Reading the group outside the policy, or a URI that is not ours, is refused (-32602).
- The SDK mirrors `security_group_id` into `Mcp-Param-Security-Group-Id` (it reads the
  `x-mcp-header` annotation from `tools/list`); a raw call whose header names another group than
  the body is refused with 400 / -32020 and changes nothing in moto or the audit log.
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
from mcp.shared.exceptions import MCPError

from conftest import Moto, Server

WORKERS = 2
PREFIX = "awswhitelist://history/"
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
}


@pytest.fixture(scope="module")
def setup(
    start_server: Callable[..., Any], moto: Moto, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Moto, list[str], str, Path]]:
    state = tmp_path_factory.mktemp("state")
    ec2 = moto.ec2()
    allowed = [ec2.create_security_group(GroupName=f"res-py-{n}", Description=f"allowed {n}")["GroupId"] for n in "ab"]
    other = ec2.create_security_group(GroupName="res-py-other", Description="not allowed")["GroupId"]
    config = tmp_path_factory.mktemp("config") / "awswhitelist.toml"
    config.write_text(
        f"""
workers = {WORKERS}
[aws]
endpoint_url = "{moto.url}"
region = "us-east-1"
[mcp]
page_size = 1
[whitelist]
state_dir = "{state}"
[policy]
allowed_security_groups = {json.dumps(allowed)}
[log]
format = "json"
"""
    )
    args = ["--config", str(config), "--bind", "127.0.0.1:0"]
    with start_server(args, WORKERS, moto.env) as srv:
        yield srv, moto, sorted(allowed), other, state
    errors = [line for line in srv.lines if '"level":"ERROR"' in line]
    assert not errors, "serve logged errors:\n" + "\n".join(errors)


def with_client(server: Server, body: Callable[[Client], Any], seen: list[tuple[httpx2.Request, int]] | None = None) -> Any:
    """Runs `body(client)` with an SDK client in auto mode (2026-07-28); records every request
    with the status it got."""
    out: dict[str, Any] = {}

    async def on_response(response: httpx2.Response) -> None:
        if seen is not None:
            seen.append((response.request, response.status_code))

    async def go() -> None:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0), event_hooks={"response": [on_response]}) as http:
            async with Client(streamable_http_client(server.url, http_client=http), mode="auto", cache=None) as client:
                out["r"] = await body(client)

    anyio.run(go)
    return out.get("r")


def raw(server: Server, method: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> httpx2.Response:
    """One 2026-07-28 POST with the standard headers (and `headers` on top)."""
    sent = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
    }
    name = params.get("name") or params.get("uri")
    if name:
        sent["Mcp-Name"] = name
    sent.update(headers or {})
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}}
    return httpx2.post(server.url, headers=sent, content=json.dumps(body), timeout=30.0)


def audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rule(group: str, ip: str) -> dict[str, Any]:
    return {"security_group_id": group, "ip_address": ip, "port": 22}


def test_resources_list_pages_through_the_allowed_groups_with_caching_hints(setup: Any) -> None:
    server, _, allowed, other, _ = setup

    async def body(client: Client) -> list[str]:
        uris, cursor = [], None
        for _ in range(10):
            page = await client.list_resources(cursor=cursor)
            assert len(page.resources) <= 1, page
            uris += [str(r.uri) for r in page.resources]
            assert all(r.mime_type == "application/json" for r in page.resources)
            cursor = page.next_cursor
            if cursor is None:
                break
        return uris

    assert with_client(server, body) == [PREFIX + g for g in allowed]
    assert PREFIX + other not in with_client(server, body)
    first = raw(server, "resources/list", {})
    assert first.status_code == 200, first.text
    result = first.json()["result"]
    assert result["cacheScope"] == "private" and isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0, result
    second = raw(server, "resources/list", {"cursor": result["nextCursor"]}).json()["result"]
    assert second["cacheScope"] == "private" and "ttlMs" in second and "nextCursor" not in second, second
    templates = raw(server, "resources/templates/list", {}).json()["result"]
    assert templates["resourceTemplates"][0]["uriTemplate"].startswith(PREFIX), templates
    assert templates["cacheScope"] == "public" and "ttlMs" in templates, templates
    discover = raw(server, "server/discover", {}).json()["result"]
    assert "resources" in discover["capabilities"], discover


def test_history_resource_and_tool_answer_the_scripted_changes_newest_first(setup: Any) -> None:
    server, moto, allowed, other, state = setup
    a, b = allowed
    seen: list[tuple[httpx2.Request, int]] = []

    async def script(client: Client) -> None:
        for name, args in [
            ("whitelist_add", rule(a, "198.51.100.7")),
            ("whitelist_add", rule(b, "198.51.100.8")),
            ("whitelist_remove", rule(a, "198.51.100.7")),
        ]:
            r = await client.call_tool(name, args)
            assert not r.is_error, r

    with_client(server, script, seen)
    # A tool the SDK has not listed yet is called without the header: refused (400, -32020),
    # then the SDK lists the tools and calls again with it (the spec's recovery).
    calls = [(r.headers.get("mcp-param-security-group-id"), status) for r, status in seen if r.headers.get("mcp-method") == "tools/call"]
    assert [h for h, status in calls if status == 200] == [a, b, a], calls
    assert all(h is None for h, status in calls if status != 200), calls
    assert moto.ingress(a) == [] and moto.ingress(b) == [("198.51.100.8/32", 22)]

    async def read(client: Client) -> tuple[dict[str, Any], Any]:
        res = await client.read_resource(PREFIX + a)
        tool = await client.call_tool("whitelist_history", {"security_group_id": a})
        return json.loads(res.contents[0].text), tool.structured_content

    doc, tool = with_client(server, read)
    expected = [e for e in audit(state) if e.get("group_id") == a][::-1]
    assert len(expected) == 4, expected  # intent and outcome of the add and of the remove
    key = lambda e: (e["time"], e.get("id"), e.get("phase"), e.get("action"), e.get("result"))  # noqa: E731
    assert [key(e) for e in doc["entries"]] == [key(e) for e in expected], doc
    assert [key(e) for e in tool["entries"]] == [key(e) for e in expected], tool
    assert doc["security_group_id"] == a and doc["next_cursor"] is None


def test_reading_a_group_outside_the_policy_or_not_ours_is_refused(setup: Any) -> None:
    server, _, _, other, _ = setup
    for uri in [PREFIX + other, "file:///etc/passwd", PREFIX + "../x"]:

        async def read(client: Client, uri: str = uri) -> None:
            with pytest.raises(MCPError) as err:
                await client.read_resource(uri)
            assert err.value.error.code == -32602, err.value.error

        with_client(server, read)
    r = raw(server, "resources/read", {"uri": PREFIX + other})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602, r.text
    assert other not in json.dumps(r.json()["error"].get("data", {})).replace(PREFIX + other, ""), r.text


def test_a_mismatched_or_missing_group_header_is_refused_and_changes_nothing(setup: Any) -> None:
    server, moto, allowed, _, state = setup
    a, b = allowed
    before = (moto.ingress(a), moto.ingress(b), len(audit(state)))
    args = {"name": "whitelist_add", "arguments": rule(a, "203.0.113.9")}
    for headers in [{"Mcp-Param-Security-Group-Id": b}, {}, {"Mcp-Param-Security-Group-Id": a.upper()}]:
        r = raw(server, "tools/call", args, headers)
        assert r.status_code == 400, (headers, r.status_code, r.text)
        assert r.json()["error"]["code"] == -32020, r.text
    assert (moto.ingress(a), moto.ingress(b), len(audit(state))) == before
    ok = raw(server, "tools/call", {"name": "whitelist_check", "arguments": rule(a, "203.0.113.9")}, {"Mcp-Param-Security-Group-Id": a})
    assert ok.status_code == 200 and "error" not in ok.json(), ok.text
