"""The Python MCP SDK (PyPI `mcp` 2.x) against `serve` with authentication on.

One `awswhitelist serve` (two workers, loopback) is started for this module with a config file
generated here: `[auth]` with an HS shared secret (random, written to a temp file) and one API key
from `awswhitelist keygen`; the token the client presents comes from `awswhitelist token`. The
audience, i.e. the server's canonical resource URI, is the URL the client really uses, so the
`resource_metadata` URL the server advertises on a 401 can be followed as it is.

What it shows:

- with `Authorization: Bearer <token>` on its httpx2 client, the SDK connects (auto and legacy
  mode), lists the tools and calls `service_status`;
- without a credential, connecting fails: the server answers every POST with 401 and
  `WWW-Authenticate: Bearer resource_metadata="…"`, and the SDK raises the JSON-RPC error carried
  in that 401's body (MCPError -32001 "no bearer credential"). It does not attempt OAuth discovery:
  this SDK does that only when an OAuth auth provider is plugged into the httpx2 client;
- a raw POST without a token shows the same 401, and the advertised metadata URL serves the
  RFC 9728 document naming this resource.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import Server, binary, clean_env, free_port

WORKERS = 2
ISSUER = "https://issuer.test/"
AUTHORIZATION_SERVER = "https://login.issuer.test/"
READ_WRITE = "whitelist:read whitelist:write"
ALL_TOOLS = {
    "service_status",
    "whitelist_add",
    "whitelist_check",
    "whitelist_find",
    "whitelist_groups",
    "whitelist_history",
    "whitelist_list",
    "whitelist_move",
    "whitelist_remove",
    "whitelist_revoke_everywhere",
}


# --------------------------------------------------------------------------------------------
# The server (the harness is tests/python/conftest.py)
# --------------------------------------------------------------------------------------------


def keygen(key_id: str, scopes: str) -> tuple[str, str]:
    """`awswhitelist keygen`: the key (printed once) and its `[[auth.api_keys]]` entry."""
    out = subprocess.run(
        [str(binary()), "keygen", "--id", key_id, "--scopes", scopes],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout
    key = next(line for line in out.splitlines() if line.startswith("awsk_"))
    entry = out[out.index("[[auth.api_keys]]") :]
    assert key not in entry, "the config entry must hold only the key's hash"
    return key, entry


class AuthConfig:
    """The config file of the server under test: `[auth]` with a random HS secret and one
    read-only API key, its audience the URL the client really uses (a port chosen here)."""

    def __init__(self, workdir: Path) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        self.secret_file = workdir / "jwt.secret"
        # 48 random bytes as hex text; the server reads the file's text as the secret.
        self.secret_file.write_text(secrets.token_hex(48))
        self.secret_file.chmod(0o600)
        self.api_key, entry = keygen("py-ro", "whitelist:read")
        self.path = workdir / "config.toml"
        self.path.write_text(
            f"""bind = "{self.addr}"
workers = {WORKERS}

[auth]
enabled = true
issuer = "{ISSUER}"
audience = ["http://{self.addr}/mcp"]
hs_secret_file = "{self.secret_file}"
authorization_servers = ["{AUTHORIZATION_SERVER}"]

{entry}
[log]
format = "json"

[whitelist]
state_dir = "{workdir / 'state'}"
"""
        )


@dataclass
class AuthServer:
    """The running server, with what the tests need of its config."""

    srv: Server
    config: AuthConfig

    @property
    def addr(self) -> str:
        return self.config.addr

    @property
    def url(self) -> str:
        return f"http://{self.addr}/mcp"

    @property
    def metadata_url(self) -> str:
        """RFC 9728 §3.1: the well-known prefix inserted before the resource's path."""
        return f"http://{self.addr}/.well-known/oauth-protected-resource/mcp"

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def worker_slots(self) -> set[int]:
        return self.srv.worker_slots

    def token(self, sub: str, scope: str = READ_WRITE) -> str:
        """A token from `awswhitelist token`, with this server's config (secret, iss, aud)."""
        out = subprocess.run(
            [str(binary()), "token", "--config", str(self.config.path), "--sub", sub, "--scope", scope, "--ttl", "10m"],
            check=True,
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        return out.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, start_server: Callable[..., Any]) -> Iterator[AuthServer]:
    config = AuthConfig(tmp_path_factory.mktemp("awswl-auth"))
    with start_server(["--config", str(config.path)], WORKERS) as srv:
        assert srv.addr == config.addr, (srv.addr, config.addr)
        yield AuthServer(srv, config)
    secret = config.secret_file.read_text()
    assert not [line for line in srv.lines if secret in line], "the HS secret appeared in the log"


# --------------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request the SDK made, and its answer."""

    http_method: str
    path: str
    rpc_method: str | None
    status: int | None = None
    www_authenticate: str | None = None


@dataclass
class Recorder:
    exchanges: list[Exchange] = field(default_factory=list)

    def client(self, authorization: str | None) -> httpx2.AsyncClient:
        async def on_request(request: httpx2.Request) -> None:
            rpc_method = None
            if request.method == "POST":
                try:
                    body = json.loads(request.content)
                    rpc_method = body.get("method") if isinstance(body, dict) else "<batch>"
                except ValueError:
                    rpc_method = "<unparsable>"
            exchange = Exchange(request.method, request.url.path, rpc_method)
            self.exchanges.append(exchange)
            request.extensions["awswl_exchange"] = exchange

        async def on_response(response: httpx2.Response) -> None:
            exchange = response.request.extensions["awswl_exchange"]
            exchange.status = response.status_code
            exchange.www_authenticate = response.headers.get("www-authenticate")

        headers = {"Authorization": authorization} if authorization is not None else {}
        return httpx2.AsyncClient(
            headers=headers,
            # A new connection per request: the conversation is spread over both workers.
            limits=httpx2.Limits(max_keepalive_connections=0),
            timeout=httpx2.Timeout(30.0),
            event_hooks={"request": [on_request], "response": [on_response]},
        )


async def connect_and(
    server: AuthServer,
    mode: str,
    recorder: Recorder,
    authorization: str | None,
    body: Callable[[Client], Awaitable[None]],
) -> None:
    async with recorder.client(authorization) as http:
        async with Client(streamable_http_client(server.url, http_client=http), mode=mode, cache=None) as client:
            await body(client)


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def mcp_errors(exc: BaseException) -> list[MCPError]:
    return [e for e in leaves(exc) if isinstance(e, MCPError)]


CHALLENGE = re.compile(r'^Bearer (?P<params>[a-z_]+="[^"\\]*"(?:, [a-z_]+="[^"\\]*")*)$')


def challenge_params(value: str) -> dict[str, str]:
    """`Bearer k="v", k="v"` → {k: v}, strictly (RFC 6750 §3; every value a quoted-string)."""
    match = CHALLENGE.match(value)
    assert match, f"not a Bearer challenge: {value!r}"
    pairs = re.findall(r'([a-z_]+)="([^"]*)"', match["params"])
    params = dict(pairs)
    assert len(params) == len(pairs), f"a parameter given twice: {value!r}"
    return params


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_with_a_token_the_client_lists_tools_and_calls_service_status(server: AuthServer, mode: str) -> None:
    recorder = Recorder()
    seen: dict[str, Any] = {}

    async def body(client: Client) -> None:
        seen["version"] = client.protocol_version
        seen["tools"] = (await client.list_tools()).tools
        seen["status"] = await client.call_tool("service_status", {})

    token = server.token("py-client")
    anyio.run(lambda: connect_and(server, mode, recorder, f"Bearer {token}", body))

    assert seen["version"] == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert {t.name for t in seen["tools"]} == ALL_TOOLS
    result = seen["status"]
    assert result.is_error is not True, result
    assert result.structured_content["service"] == "awswhitelist", result
    assert result.structured_content["worker"] in server.worker_slots, result
    # Every request carried the token and was accepted.
    assert recorder.exchanges, "no HTTP request recorded"
    assert all(e.status in (200, 202) for e in recorder.exchanges), recorder.exchanges
    assert not [e for e in recorder.exchanges if e.www_authenticate], recorder.exchanges


def test_a_read_only_api_key_sees_the_read_tools_and_cannot_add(server: AuthServer) -> None:
    recorder = Recorder()
    seen: dict[str, Any] = {}

    async def body(client: Client) -> None:
        seen["tools"] = {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as refused:
            await client.call_tool(
                "whitelist_add", {"security_group_id": "sg-0123456789abcdef0", "ip_address": "192.0.2.1", "port": 22}
            )
        seen["refused"] = refused.value

    anyio.run(lambda: connect_and(server, "auto", recorder, f"Bearer {server.api_key}", body))

    assert {"whitelist_check", "whitelist_list"} <= seen["tools"], seen["tools"]
    assert not {"whitelist_add", "whitelist_remove"} & seen["tools"], seen["tools"]
    # The 403 insufficient_scope, as the SDK surfaces it: the JSON-RPC error of the 403's body.
    assert seen["refused"].code == -32001, seen["refused"]
    assert "whitelist:write" in seen["refused"].message, seen["refused"]
    (call,) = [e for e in recorder.exchanges if e.rpc_method == "tools/call"]
    assert call.status == 403, recorder.exchanges
    params = challenge_params(call.www_authenticate or "")
    assert params["error"] == "insufficient_scope" and params["scope"] == "whitelist:write", params
    assert params["resource_metadata"] == server.metadata_url, params


def test_resources_need_the_read_scope_and_read_only_keys_have_them(server: AuthServer) -> None:
    recorder = Recorder()
    seen: dict[str, Any] = {}

    async def read_only(client: Client) -> None:
        seen["templates"] = (await client.list_resource_templates()).resource_templates

    async def write_only(client: Client) -> None:
        with pytest.raises(MCPError) as refused:
            await client.list_resource_templates()
        seen["refused"] = refused.value

    anyio.run(lambda: connect_and(server, "auto", recorder, f"Bearer {server.api_key}", read_only))
    assert [t.uri_template for t in seen["templates"]] == ["awswhitelist://history/{security_group_id}{?cursor}"]
    token = server.token("writer-only", "whitelist:write")
    anyio.run(lambda: connect_and(server, "auto", recorder, f"Bearer {token}", write_only))
    assert seen["refused"].code == -32001 and "whitelist:read" in seen["refused"].message, seen["refused"]
    (refused,) = [e for e in recorder.exchanges if e.rpc_method == "resources/templates/list" and e.status != 200]
    assert refused.status == 403, recorder.exchanges
    params = challenge_params(refused.www_authenticate or "")
    assert params["error"] == "insufficient_scope" and params["scope"] == "whitelist:read", params


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_without_a_token_the_client_fails_on_the_401(server: AuthServer, mode: str) -> None:
    recorder = Recorder()
    reached: list[bool] = []

    async def body(client: Client) -> None:
        reached.append(True)

    with pytest.raises(BaseException) as failed:
        anyio.run(lambda: connect_and(server, mode, recorder, None, body))

    assert not reached, "connected without a credential"
    errors = mcp_errors(failed.value)
    assert errors, f"expected an MCPError, got {failed.value!r}"
    assert {(e.code, e.message) for e in errors} == {(-32001, "no bearer credential")}, errors
    # On the wire: only POSTs to /mcp, each answered 401 with the resource metadata challenge and
    # no error code (no credential was presented). No OAuth discovery (no GET of any
    # .well-known document): this SDK does that only with an OAuth auth provider configured.
    # Auto mode probes server/discover first, then falls back to initialize.
    expected = ["server/discover", "initialize"] if mode == "auto" else ["initialize"]
    assert [(e.http_method, e.path, e.rpc_method) for e in recorder.exchanges] == [
        ("POST", "/mcp", m) for m in expected
    ], recorder.exchanges
    for e in recorder.exchanges:
        assert e.status == 401, e
        assert e.www_authenticate == f'Bearer resource_metadata="{server.metadata_url}"', e


def test_with_a_bad_token_the_client_fails_with_invalid_token(server: AuthServer) -> None:
    recorder = Recorder()
    token = server.token("py-client")
    forged = token[: -len("AAAA")] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    async def body(client: Client) -> None:
        raise AssertionError("connected with a forged token")

    with pytest.raises(BaseException) as failed:
        anyio.run(lambda: connect_and(server, "legacy", recorder, f"Bearer {forged}", body))

    errors = mcp_errors(failed.value)
    assert [e.code for e in errors] == [-32001], failed.value
    assert "signature" in errors[0].message, errors
    assert forged not in errors[0].message
    (exchange,) = recorder.exchanges
    assert exchange.status == 401, exchange
    params = challenge_params(exchange.www_authenticate or "")
    assert params["error"] == "invalid_token", params
    assert params["resource_metadata"] == server.metadata_url, params


def test_a_raw_post_without_a_token_gets_401_and_the_metadata_url_works(server: AuthServer) -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with httpx2.Client(timeout=httpx2.Timeout(30.0)) as http:
        r = http.post(
            server.url,
            json=request,
            headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"},
        )
        assert r.status_code == 401, r.text
        challenge = r.headers["www-authenticate"]
        assert challenge_params(challenge) == {"resource_metadata": server.metadata_url}, challenge
        assert r.json()["error"]["code"] == -32001, r.text

        # Follow it, as an MCP client doing RFC 9728 discovery would.
        doc = http.get(challenge_params(challenge)["resource_metadata"])
        assert doc.status_code == 200, doc.text
        assert doc.headers["content-type"].startswith("application/json")
        metadata = doc.json()
        assert metadata["resource"] == server.url, metadata
        assert metadata["authorization_servers"] == [AUTHORIZATION_SERVER], metadata
        assert metadata["scopes_supported"] == ["whitelist:read", "whitelist:write"], metadata
        assert metadata["bearer_methods_supported"] == ["header"], metadata
        # The root well-known path serves the same document.
        root = http.get(f"http://{server.addr}/.well-known/oauth-protected-resource")
        assert root.status_code == 200 and root.json() == metadata, root.text

        # With the token, the same raw POST is answered.
        ok = http.post(
            server.url,
            json=request,
            headers={
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-06-18",
                "Authorization": f"Bearer {server.token('py-raw')}",
            },
        )
        assert ok.status_code == 200, ok.text
        assert "www-authenticate" not in ok.headers
        assert {t["name"] for t in ok.json()["result"]["tools"]} == ALL_TOOLS
