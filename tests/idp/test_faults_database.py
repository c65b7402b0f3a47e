"""Database faults made real: a real ``idp serve`` on a PostgreSQL database of the test's own,
reached through a TCP proxy the test pauses (stops relaying, keeps every socket open: the server
still ACKs, as a hung or partitioned PostgreSQL does) and cuts (closes every connection).

While the database hangs, every endpoint must answer promptly: /healthz 200, the OAuth endpoints
and /revoked 503 with Retry-After, /jwks the keys the process already holds; a log line says
why. When the database is back, so is the service."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from idp.config import Settings
from idp.provider import Provider

from idp_testing import ISSUER, ServerProcess, env_for, random_kek, register

pytestmark = pytest.mark.slow


class FaultProxy:
    """A TCP relay to ``target`` on its own event loop thread, with two faults:

    * ``pause()``: stop relaying in both directions; sockets stay open and new connections are
      accepted (the kernel ACKs everything), so nothing times out at the TCP level;
    * ``cut()``: close every relayed connection at once (a failover, a restarted server);
    * ``down()``/``up()``: cut, and refuse connections until ``up()`` (the server is stopped).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._running: asyncio.Event = self._call(self._make_event)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server = self._call(self._start)
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _call(self, coro_fn: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(10)

    async def _make_event(self) -> asyncio.Event:
        ev = asyncio.Event()
        ev.set()
        return ev

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._running.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._running.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._running.wait()  # data read just before a pause is held, not relayed
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def pause(self) -> None:
        self._loop.call_soon_threadsafe(self._running.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._running.set)

    def cut(self) -> None:
        async def close_all() -> None:
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self._call(close_all)

    def down(self) -> None:
        """The database is gone: every connection closed, new ones refused."""
        self._call(self._stop_listening)
        self.cut()

    def up(self) -> None:
        self._server = self._call(lambda: asyncio.start_server(self._accept, "127.0.0.1", self.port))

    async def _stop_listening(self) -> None:
        self._server.close()

    def close(self) -> None:
        self.resume()
        self.cut()
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def rig(pg_database: str, tmp_path: Path) -> Iterator[Any]:
    """``idp serve`` on ``pg_database`` through a FaultProxy, and a registered client."""
    settings = Settings(issuer=ISSUER, database_url=pg_database, keys_dir=tmp_path / "keys", keystore_kek=random_kek())
    prov = Provider.open(settings)
    client, secret = register(prov)
    direct = make_url(pg_database)
    proxy = FaultProxy((direct.host or "127.0.0.1", direct.port or 5432))
    proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {**env_for(settings), "IDP_DATABASE_URL": proxied, "IDP_LOG_LEVEL": "info", "IDP_DATABASE_TIMEOUT": "1",
           "IDP_KEY_REFRESH_INTERVAL": "1"}
    from idp_testing import free_port

    server = ServerProcess(env, free_port())
    try:
        yield type("Rig", (), {"server": server, "proxy": proxy, "auth": (client.client_id, secret), "prov": prov})
    finally:
        proxy.resume()
        server.stop()
        proxy.close()
        prov.close()


def timed(method: str, url: str, **kw: Any) -> tuple[float, httpx.Response]:
    start = time.monotonic()
    resp = httpx.request(method, url, timeout=30, **kw)
    return time.monotonic() - start, resp


def token(rig: Any) -> tuple[float, httpx.Response]:
    return timed("POST", rig.server.url + "/token", data={"grant_type": "client_credentials"}, auth=rig.auth)


def log_lines(rig: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in rig.server.log.read_text().splitlines() if x.startswith("{")]


def assert_recovers(rig: Any) -> None:
    deadline = time.monotonic() + 20
    while True:
        _, resp = token(rig)
        if resp.status_code == 200:
            break
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, "the IdP did not recover after the database came back"
        time.sleep(0.2)
    access = resp.json()["access_token"]
    resp = httpx.post(rig.server.url + "/introspect", data={"token": access}, auth=rig.auth, timeout=30)
    assert resp.json()["active"] is True
    assert httpx.get(rig.server.url + "/revoked", timeout=30).status_code == 200


def test_hung_database_gives_prompt_503_with_retry_after_and_healthz_keeps_answering(rig: Any) -> None:
    _, ok = token(rig)
    assert ok.status_code == 200, ok.text
    jwks_before = httpx.get(rig.server.url + "/jwks", timeout=30).json()
    time.sleep(1.2)  # past key_refresh_interval: the next /jwks and /token want the database
    rig.proxy.pause()
    paused = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as pool:
            # Several requests hang on the database at once; the loop must keep answering others.
            tokens = [pool.submit(token, rig) for _ in range(6)]
            introspections = [pool.submit(timed, "POST", rig.server.url + "/introspect", data={"token": "x"},
                                          auth=rig.auth) for _ in range(2)]
            time.sleep(0.2)
            for _ in range(3):  # (1 s: this shared machine is slow; a blocked loop takes the whole hang)
                took, health = timed("GET", rig.server.url + "/healthz")
                assert health.status_code == 200 and took < 1.0, f"/healthz took {took:.1f}s while the database hangs"
            took, jwks = timed("GET", rig.server.url + "/jwks")
            assert jwks.status_code == 200 and took < 2.0, (jwks.status_code, took)
            assert jwks.json() == jwks_before  # the keys the process already holds
            took, revoked = timed("GET", rig.server.url + "/revoked")
            assert revoked.status_code == 503 and revoked.headers["retry-after"].isdigit() and took < 2.5
            assert revoked.json()["error"] == "temporarily_unavailable"
            for fut in tokens + introspections:
                took, resp = fut.result()
                assert resp.status_code == 503, resp.text
                assert resp.json()["error"] == "temporarily_unavailable"
                assert resp.headers["retry-after"].isdigit() and resp.headers["cache-control"] == "no-store"
                assert took < 3.0, f"a 503 took {took:.1f}s"
        assert time.monotonic() - paused < 6
        warnings = [x for x in log_lines(rig) if x["level"] == "warning" and "database" in x["msg"]]
        assert warnings, "nothing logged while the database hangs"
        assert "Traceback" not in rig.server.log.read_text()
    finally:
        rig.proxy.resume()
    assert_recovers(rig)


def test_database_down_gives_503_not_500_and_jwks_serves_held_keys(rig: Any) -> None:
    _, ok = token(rig)
    assert ok.status_code == 200, ok.text
    jwks_before = httpx.get(rig.server.url + "/jwks", timeout=30).json()
    time.sleep(1.2)
    rig.proxy.down()
    try:
        for _ in range(2):
            took, jwks = timed("GET", rig.server.url + "/jwks")
            assert jwks.status_code == 200, jwks.text
            assert jwks.json() == jwks_before and took < 2.0
            took, revoked = timed("GET", rig.server.url + "/revoked")
            assert revoked.status_code == 503, revoked.text
            assert revoked.headers["retry-after"].isdigit() and took < 2.5
            took, resp = token(rig)
            assert resp.status_code == 503 and resp.headers["retry-after"].isdigit() and took < 2.5, resp.text
    finally:
        rig.proxy.up()
    assert_recovers(rig)
    assert "Traceback" not in rig.server.log.read_text()


def test_database_connections_cut_while_paused_recover(rig: Any) -> None:
    """Paused, then every connection cut (a failover): 503s meanwhile, then service again."""
    _, ok = token(rig)
    assert ok.status_code == 200, ok.text
    time.sleep(1.2)
    rig.proxy.pause()
    rig.proxy.cut()
    try:
        took, resp = token(rig)
        assert resp.status_code == 503 and resp.headers["retry-after"].isdigit() and took < 2.5, resp.text
        took, jwks = timed("GET", rig.server.url + "/jwks")
        assert jwks.status_code == 200 and took < 2.0
    finally:
        rig.proxy.resume()
    assert_recovers(rig)
    assert "Traceback" not in rig.server.log.read_text()
