"""Origins, host names and the access token: the pure policy, the config checks, and the real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from stream.access import COOKIE_NAME, AccessPolicy, Grant, Refusal, is_loopback, request_token
from stream.config import ConfigError, ServerConfig, load_config
from stream.events.eventlog import EventLog
from stream.events.hub import Hub
from stream.server import Server

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-token-0123456789abcdef"


def test_loopback_spellings() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "example.com"):
        assert not is_loopback(host), host


def test_default_policy_accepts_only_the_dashboards_own_origins() -> None:
    policy = AccessPolicy("127.0.0.1", 8765)
    host = {"Host": "127.0.0.1:8765"}
    for origin in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765", "HTTP://LOCALHOST:8765"):
        assert isinstance(policy.check({**host, "Origin": origin}, "/ws"), Grant), origin
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "http://localhost", "null", "file://"):
        refusal = policy.check({**host, "Origin": origin}, "/ws")
        assert isinstance(refusal, Refusal) and refusal.status == 403, origin
    assert isinstance(policy.check(host, "/ws"), Grant)  # no Origin: a script, not a browser


def test_allowed_origins_widen_the_default() -> None:
    policy = AccessPolicy("127.0.0.1", 8765, allowed_origins=("https://dash.example",))
    assert isinstance(policy.check({"Origin": "https://dash.example"}, "/ws"), Grant)
    assert isinstance(policy.check({"Origin": "https://dash.example:443"}, "/ws"), Grant)  # default port
    assert isinstance(policy.check({"Origin": "http://dash.example"}, "/ws"), Refusal)  # other scheme
    assert isinstance(policy.check({"Origin": "http://localhost:8765"}, "/ws"), Grant)  # own still allowed


def test_dns_rebinding_is_refused_by_origin() -> None:
    """evil.example made to resolve to 127.0.0.1: its page's origin is still evil.example."""
    policy = AccessPolicy("127.0.0.1", 8765)
    refusal = policy.check({"Host": "evil.example:8765", "Origin": "http://evil.example:8765"}, "/ws")
    assert isinstance(refusal, Refusal) and refusal.status == 403


def test_non_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="without server.token"):
        AccessPolicy("0.0.0.0", 8765)


def test_token_is_required_on_every_request_and_compared_exactly() -> None:
    policy = AccessPolicy("0.0.0.0", 8765, token=TOKEN)
    assert policy.token_required
    missing = policy.check({"Host": "192.168.1.5:8765"}, "/")
    assert isinstance(missing, Refusal) and missing.status == 401 and "token" in missing.message
    wrong = policy.check({"Host": "192.168.1.5:8765"}, "/ws?token=" + TOKEN[:-1] + "x")
    assert isinstance(wrong, Refusal) and wrong.status == 401
    assert policy.check({}, f"/?token={TOKEN}") == Grant(set_cookie=True)
    assert policy.check({"Authorization": f"Bearer {TOKEN}"}, "/api/classify") == Grant()
    assert policy.check({"Cookie": f"a=b; {COOKIE_NAME}={TOKEN}"}, "/app.js") == Grant()
    # The page on a LAN address is its own origin when it holds the token.
    lan = {"Host": "192.168.1.5:8765", "Origin": "http://192.168.1.5:8765", "Cookie": f"{COOKIE_NAME}={TOKEN}"}
    assert policy.check(lan, "/ws") == Grant()
    foreign = policy.check({**lan, "Origin": "http://evil.example"}, "/ws")
    assert isinstance(foreign, Refusal) and foreign.status == 403  # the token does not excuse a foreign page


def test_request_token_sources() -> None:
    assert request_token({"Authorization": "Bearer abc"}, "/") == ("abc", "header")
    assert request_token({}, "/ws?x=1&token=abc") == ("abc", "query")
    assert request_token({"Cookie": f"{COOKIE_NAME}=abc"}, "/") == ("abc", "cookie")
    assert request_token({"Authorization": "Basic abc"}, "/") == (None, "")


def test_config_refuses_a_public_bind_without_a_token() -> None:
    with pytest.raises(ConfigError, match=r"server\.token must be set"):
        load_config(None, **{"server.host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="at least 16"):
        ServerConfig(host="0.0.0.0", token="short")
    with pytest.raises(ConfigError, match="allowed_origins"):
        ServerConfig(allowed_origins=("dash.example",))
    assert load_config(None, **{"server.host": "0.0.0.0", "server.token": TOKEN}).server.token == TOKEN
    # No server at all: nothing is exposed, no token needed.
    assert not load_config(None, **{"server.host": "0.0.0.0", "server.enabled": False}).server.enabled


def test_cli_stops_with_a_clear_message_on_a_public_bind(capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    assert main(["run", "--host", "0.0.0.0", "--config", str(Path(__file__).parents[2] / "config.toml")]) == 2
    err = capsys.readouterr().err
    assert "server.token must be set" in err and "0.0.0.0" in err


# -- the real server on loopback --------------------------------------------------------------


async def _serve(tmp_path: Path, **cfg: Any) -> tuple[Server, EventLog]:
    log = EventLog(tmp_path / "events")
    server = Server(ServerConfig(port=0, **cfg), Hub(queue_events=10), log, lambda: {})
    await server.__aenter__()
    return server, log


async def _http(port: int, request: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_server_refuses_a_foreign_origin_before_the_upgrade(tmp_path: Path) -> None:
    server, log = await _serve(tmp_path)
    try:
        with pytest.raises(InvalidStatus) as info:
            await connect(server.ws_url, origin="http://evil.example")  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
        assert b"not allowed" in (info.value.response.body or b"")
        assert server.connections == 0 and server.refused_access == 1
        for origin in (f"http://localhost:{server.port}", f"http://127.0.0.1:{server.port}", None):
            async with connect(server.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["type"] == "hello"
        status, _, _ = await _http(server.port, "GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\r\n")
        assert status == 403
    finally:
        await server.aclose()
        log.close()


async def test_server_with_a_token_checks_every_request(tmp_path: Path) -> None:
    server, log = await _serve(tmp_path, host="0.0.0.0", token=TOKEN)
    ws_url = f"ws://127.0.0.1:{server.port}/ws"
    try:
        with pytest.raises(InvalidStatus) as info:
            await connect(ws_url)
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            await connect(ws_url + "?token=wrong-token-0123456789")
        assert info.value.response.status_code == 401
        async with connect(ws_url + f"?token={TOKEN}") as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
        # Static files too; the page's first load with ?token= leaves a cookie for its scripts and sockets.
        status, _, _ = await _http(server.port, "GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 401
        status, headers, body = await _http(server.port, f"GET /?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and b"emostream" in body
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = cookie.split(";")[0]
        status, _, _ = await _http(server.port, f"GET /app.js HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\n\r\n")
        assert status == 200
        with pytest.raises(InvalidStatus) as info:  # a foreign page holding the cookie is still refused
            await connect(ws_url, origin="http://evil.example", additional_headers={"Cookie": jar})  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
    finally:
        await server.aclose()
        log.close()


def test_server_will_not_bind_a_public_address_without_a_token(tmp_path: Path) -> None:
    cfg = ServerConfig(port=0)
    object.__setattr__(cfg, "host", "0.0.0.0")  # past the config check: the server refuses on its own
    with EventLog(tmp_path) as log, pytest.raises(ValueError, match="without server.token"):
        Server(cfg, Hub(queue_events=10), log, lambda: {})
