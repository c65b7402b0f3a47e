"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2026-07-28):
a good document becomes a usable client; every SSRF and validation attack is refused with a
clean ``invalid_client``, and the refused URL is never fetched.

Real HTTPS servers on loopback with trustme certificates; the test CA is trusted through
``cimd_ca_file`` and the loopback host ``localhost`` is allowed explicitly through
``cimd_allowed_hosts`` (only where a test says so). SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cimd_testing import DocumentServer, Route
from idp_testing import ISSUER, random_kek

from idp.config import Settings
from idp.oauth2.cimd import ClientDocumentError
from idp.oauth2.cimd_fetch import public_address
from idp.oauth2.client import METADATA_DOCUMENT
from idp.provider import Provider


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA, tmp_path: Path) -> Iterator[DocumentServer]:
    srv = DocumentServer(ca, tmp_path)
    yield srv
    srv.close()


def make_provider(db_url: str, tmp_path: Path, ca: trustme.CA, **overrides: Any) -> Provider:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    options: dict[str, Any] = {"cimd_allowed_hosts": ["localhost"], "cimd_ca_file": ca_file, "cimd_timeout": 2.0,
                               "cimd_connect_timeout": 1.0, **overrides}
    settings = Settings(issuer=ISSUER, database_url=db_url, keys_dir=tmp_path / "keys", keystore_kek=random_kek(),
                        **options)
    return Provider.open(settings)


@pytest.fixture
def provider(db_url: str, tmp_path: Path, ca: trustme.CA) -> Iterator[Provider]:
    prov = make_provider(db_url, tmp_path, ca)
    yield prov
    prov.close()


@pytest.fixture
def local(tmp_path: Path, ca: trustme.CA) -> Iterator[Provider]:
    """On SQLite only: for refusals decided before anything is stored (the storage tests run on both)."""
    prov = make_provider(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path, ca)
    yield prov
    prov.close()


def resolve(provider: Provider, client_id: str) -> Any:
    return asyncio.run(provider.client_resolver.resolve(client_id))


def refused(provider: Provider, client_id: str) -> str:
    with pytest.raises(ClientDocumentError) as info:
        resolve(provider, client_id)
    assert info.value.error == "invalid_client" and info.value.status == 400
    return info.value.description


# --- a good document --------------------------------------------------------------------------

def test_good_document_becomes_a_client_the_token_endpoint_finds(provider: Provider, server: DocumentServer) -> None:
    url = server.document("/client.json", client_name="Example MCP Client",
                          redirect_uris=["http://127.0.0.1:3000/callback", "https://app.example/cb"],
                          grant_types=["authorization_code", "refresh_token"], logo_uri="https://app.example/l.png")
    client = resolve(provider, url)
    assert client is not None and client.client_id == url
    assert client.registered_by == METADATA_DOCUMENT and not client.reviewed
    assert client.display_name == "Example MCP Client"
    assert client.redirect_uris == ("http://127.0.0.1:3000/callback", "https://app.example/cb")
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert client.auth_method == "none" and client.secret_hash is None
    assert not len(client.capabilities) and client.audiences == ()
    assert client.name.startswith("cimd-localhost-")
    # Materialised: the token endpoint's lookup finds it, without any fetch.
    stored = provider.clients.get(url)
    assert stored is not None and stored.redirect_uris == client.redirect_uris
    audit = [json.loads(r) for r in _audit(provider, "client.registered")]
    assert audit and audit[-1]["registered_by"] == "cimd"


def _audit(provider: Provider, event: str) -> list[str]:
    from sqlalchemy import select

    from idp.models import AuditEvent

    table = AuditEvent.__table__  # type: ignore[attr-defined]
    with provider.engine.connect() as conn:
        return [r.data for r in conn.execute(select(table.c.data).where(table.c.event == event))]


def test_registered_clients_still_resolve(provider: Provider, server: DocumentServer) -> None:
    record, _ = provider.clients.add("ops-agent", capabilities="tools/call:*")
    assert resolve(provider, record.client_id) == record
    assert resolve(provider, "no-such-client") is None
    assert resolve(provider, "") is None
    assert sum(server.hits.values()) == 0


def test_private_key_jwt_document_keeps_its_keys(provider: Provider, server: DocumentServer) -> None:
    from joserfc.jwk import ECKey

    jwk = ECKey.generate_key("P-256").as_dict(private=False)
    url = server.document("/pkjwt.json", token_endpoint_auth_method="private_key_jwt", jwks={"keys": [jwk]})
    client = resolve(provider, url)
    assert client.auth_method == "private_key_jwt" and client.jwks == {"keys": [jwk]}


# --- SSRF: addresses --------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.251", "239.255.255.250", "255.255.255.255", "240.0.0.1", "198.18.0.1", "192.0.2.10",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "64:ff9b::a00:1", "64:ff9b::7f00:1", "2002:a00:1::1", "2002:7f00:1::1",
    "2001:db8::1", "::127.0.0.1",
])
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"])
def test_public_addresses_are_public(address: str) -> None:
    assert public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "10.1.2.3", "169.254.169.254", "[::ffff:127.0.0.1]",
                                  "[fe80::1]", "100.64.1.1"])
def test_url_at_a_non_public_address_is_refused_without_a_fetch(local: Provider, server: DocumentServer,
                                                                 host: str) -> None:
    server.document("/client.json", host=host)
    reason = refused(local, f"https://{host}:{server.port}/client.json")
    assert "non-public address" in reason
    assert sum(server.hits.values()) == 0
    assert local.clients.get(f"https://{host}:{server.port}/client.json") is None


def test_host_name_resolving_to_loopback_is_refused_unless_allowed(db_url: str, tmp_path: Path, ca: trustme.CA,
                                                                   server: DocumentServer) -> None:
    url = server.document("/client.json")  # https://localhost:PORT/...: localhost resolves to loopback
    prov = make_provider(db_url, tmp_path, ca, cimd_allowed_hosts=[])
    try:
        assert "non-public address" in refused(prov, url)
        assert sum(server.hits.values()) == 0
    finally:
        prov.close()
    allowed = make_provider(db_url, tmp_path, ca, cimd_allowed_hosts=["LOCALHOST"])  # case-insensitive
    try:
        assert resolve(allowed, url).client_id == url
    finally:
        allowed.close()


def test_allowing_one_host_does_not_allow_its_address(local: Provider, server: DocumentServer) -> None:
    server.document("/client.json", host="127.0.0.1")
    assert "non-public" in refused(local, server.url("/client.json", "127.0.0.1"))


# --- SSRF: redirects, size, time --------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", ["https://10.0.0.1/client.json", "https://169.254.169.254/latest/meta-data",
                                    "LOCAL", "https://www.example.com/client.json"])
def test_redirects_are_refused_never_followed(local: Provider, server: DocumentServer, status: int,
                                              target: str) -> None:
    real = server.document("/real.json")
    location = real if target == "LOCAL" else target
    server.routes["/moved.json"] = Route(status, b"", {"Location": location, "Content-Type": "application/json"})
    reason = refused(local, server.url("/moved.json"))
    assert "redirect" in reason
    assert server.hits["/moved.json"] == 1 and server.hits["/real.json"] == 0


def test_oversized_document_is_refused(provider: Provider, server: DocumentServer) -> None:
    url = server.url("/big.json")
    doc = {"client_id": url, "client_name": "x" * 100, "redirect_uris": ["http://127.0.0.1:1/cb"],
           "padding": "x" * 20_000}
    server.routes["/big.json"] = Route(body=json.dumps(doc).encode())
    assert "larger than 16384 bytes" in refused(provider, url)
    assert provider.clients.get(url) is None


def test_oversized_document_without_content_length_is_cut(local: Provider, server: DocumentServer) -> None:
    url = server.url("/stream.json")
    server.routes["/stream.json"] = Route(body=b'{"client_id": "' + b"x" * 40_000 + b'"}', content_length=False)
    assert "larger than 16384 bytes" in refused(local, url)


def test_slow_server_times_out(local: Provider, server: DocumentServer) -> None:
    url = server.document("/slow.json")
    server.routes["/slow.json"].delay = 4.0
    start = time.monotonic()
    assert "longer than 2 s" in refused(local, url)
    assert time.monotonic() - start < 3.5


def test_slow_loris_body_times_out(local: Provider, server: DocumentServer) -> None:
    url = server.document("/dribble.json")
    server.routes["/dribble.json"].dribble = 0.05  # ~300 bytes at 20 bytes/s: 15 s
    start = time.monotonic()
    assert "longer than 2 s" in refused(local, url)
    assert time.monotonic() - start < 3.5


def test_untrusted_certificate_is_refused(db_url: str, tmp_path: Path, server: DocumentServer) -> None:
    other = trustme.CA()
    prov = make_provider(db_url, tmp_path, other)
    try:
        assert "TLS" in refused(prov, server.document("/client.json"))
    finally:
        prov.close()


@pytest.mark.parametrize("status", [404, 500, 401])
def test_error_status_is_refused(local: Provider, server: DocumentServer, status: int) -> None:
    server.routes["/gone.json"] = Route(status, b"{}")
    assert f"HTTP {status}" in refused(local, server.url("/gone.json"))


# --- document validation ----------------------------------------------------------------------

def _serve(server: DocumentServer, path: str, doc: dict[str, Any], content_type: str = "application/json") -> str:
    server.routes[path] = Route(body=json.dumps(doc).encode(), headers={"Content-Type": content_type})
    return server.url(path)


def test_client_id_mismatch_is_refused(provider: Provider, server: DocumentServer) -> None:
    url = server.url("/client.json")
    for claimed in (server.url("/other.json"), url + "/", url.replace("localhost", "LOCALHOST"), url + "?x=1"):
        _serve(server, "/client.json", {"client_id": claimed, "client_name": "x",
                                        "redirect_uris": ["http://127.0.0.1:1/cb"]})
        provider.client_resolver._failures.clear()
        assert "does not equal its URL" in refused(provider, url)
    assert provider.clients.get(url) is None


@pytest.mark.parametrize("change,message", [
    ({"client_name": None}, "client_name"),
    ({"redirect_uris": []}, "redirect_uris"),
    ({"redirect_uris": ["http://evil.example/cb"]}, "loopback"),
    ({"redirect_uris": ["https://app.example/cb#frag"]}, "fragment"),
    ({"redirect_uris": ["javascript:alert(1)"]}, "not allowed"),
    ({"client_secret": "chosen"}, "client secret"),
    ({"token_endpoint_auth_method": "client_secret_basic"}, "shared-secret"),
    ({"token_endpoint_auth_method": "private_key_jwt"}, "jwks"),
    ({"grant_types": ["client_credentials"]}, "grant type"),
    ({"jwks_uri": "https://app.example/jwks", "token_endpoint_auth_method": "private_key_jwt"}, "jwks_uri"),
])
def test_invalid_documents_are_refused(local: Provider, server: DocumentServer, change: dict[str, Any],
                                       message: str) -> None:
    url = server.url("/client.json")
    doc = {"client_id": url, "client_name": "x", "redirect_uris": ["http://127.0.0.1:1/cb"], **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    _serve(server, "/client.json", doc)
    assert message in refused(local, url)
    assert local.clients.get(url) is None


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'{"client_id": 1}'])
def test_malformed_documents_are_refused(local: Provider, server: DocumentServer, body: bytes) -> None:
    server.routes["/bad.json"] = Route(body=body)
    refused(local, server.url("/bad.json"))


def test_wrong_content_type_is_refused(local: Provider, server: DocumentServer) -> None:
    url = server.url("/page.json")
    _serve(server, "/page.json", {"client_id": url, "client_name": "x", "redirect_uris": ["http://127.0.0.1:1/cb"]},
           content_type="text/html")
    assert "content type" in refused(local, url)


@pytest.mark.parametrize("url,message", [
    ("http://localhost:1/client.json", "https"),
    ("HTTPS://localhost:1/client.json", "https"),
    ("https://localhost:1/client.json#frag", "fragment"),
    ("https://user:pw@localhost:1/client.json", "user information"),
    ("https://localhost:1", "path"),
    ("https://localhost:1/", "path"),
    ("https://localhost:1/a/../client.json", "path segments"),
    ("https://localhost:1/a/%2e%2e/client.json", "path segments"),
    ("https://localhost:1/client.json?x=1", "query"),
    ("https://localhost:99999/client.json", "not a valid URL"),
    ("https://localhost:1/" + "a" * 600, "at most 512"),
    ("https://localhost:1/cli\u00e9nt.json", "ASCII"),
])
def test_bad_client_id_urls_are_refused_without_a_fetch(local: Provider, server: DocumentServer, url: str,
                                                        message: str) -> None:
    assert message in refused(local, url)
    assert sum(server.hits.values()) == 0


def test_non_https_document_is_never_fetched_over_http(local: Provider) -> None:
    import http.server
    import threading

    hits: list[str] = []

    class Plain(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Plain)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        assert "https" in refused(local, f"http://localhost:{httpd.server_address[1]}/client.json")
        assert hits == []
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- caching ----------------------------------------------------------------------------------

def test_second_resolve_uses_the_cache(provider: Provider, server: DocumentServer) -> None:
    url = server.document("/client.json", headers={"Cache-Control": "max-age=600"})
    first = resolve(provider, url)
    second = resolve(provider, url)
    assert first == second and server.hits["/client.json"] == 1
    assert provider.metadata_documents.cached(url).expires_at >= int(time.time()) + 590


def test_cache_bounds_apply(db_url: str, tmp_path: Path, ca: trustme.CA, server: DocumentServer) -> None:
    prov = make_provider(db_url, tmp_path, ca, cimd_min_cache=300, cimd_max_cache=3600)
    try:
        short = server.document("/short.json", headers={"Cache-Control": "no-store"})
        long = server.document("/long.json", headers={"Cache-Control": "public, max-age=99999999"})
        now = int(time.time())
        resolve(prov, short)
        resolve(prov, long)
        assert now + 295 <= prov.metadata_documents.cached(short).expires_at <= now + 305
        assert now + 3595 <= prov.metadata_documents.cached(long).expires_at <= now + 3605
    finally:
        prov.close()


def test_expired_cache_refetches_and_picks_up_changes(db_url: str, tmp_path: Path, ca: trustme.CA,
                                                      server: DocumentServer) -> None:
    prov = make_provider(db_url, tmp_path, ca, cimd_min_cache=0)
    try:
        url = server.document("/client.json", headers={"Cache-Control": "max-age=1"})
        assert resolve(prov, url).redirect_uris == ("http://127.0.0.1:3000/callback",)
        server.document("/client.json", headers={"Cache-Control": "max-age=1"},
                        redirect_uris=["http://127.0.0.1:4000/new"])
        assert resolve(prov, url).redirect_uris == ("http://127.0.0.1:3000/callback",)  # still fresh
        assert server.hits["/client.json"] == 1
        time.sleep(2.1)
        assert resolve(prov, url).redirect_uris == ("http://127.0.0.1:4000/new",)
        assert server.hits["/client.json"] == 2
        assert prov.clients.get(url).redirect_uris == ("http://127.0.0.1:4000/new",)
        assert _audit(prov, "client.updated")
    finally:
        prov.close()


def test_etag_revalidation_uses_304(db_url: str, tmp_path: Path, ca: trustme.CA, server: DocumentServer) -> None:
    prov = make_provider(db_url, tmp_path, ca, cimd_min_cache=0)
    try:
        url = server.document("/client.json", headers={"Cache-Control": "max-age=1", "ETag": '"v1"'})
        first = resolve(prov, url)
        time.sleep(2.1)
        again = resolve(prov, url)
        assert server.if_none_match == [None, '"v1"']  # revalidated, answered 304 (the server's rule)
        assert again.client_id == first.client_id and again.redirect_uris == first.redirect_uris
        assert prov.metadata_documents.cached(url).expires_at >= int(time.time())
    finally:
        prov.close()


def test_failure_is_remembered_briefly(local: Provider, server: DocumentServer) -> None:
    server.routes["/flaky.json"] = Route(500, b"{}")
    url = server.url("/flaky.json")
    refused(local, url)
    server.document("/flaky.json")
    refused(local, url)  # remembered: no second fetch at once
    assert server.hits["/flaky.json"] == 1
    local.client_resolver._failures.clear()  # as after FAILURE_TTL
    assert resolve(local, url).client_id == url


def test_concurrent_resolves_share_one_fetch(provider: Provider, server: DocumentServer) -> None:
    url = server.document("/client.json")
    server.routes["/client.json"].delay = 0.3

    async def many() -> list[Any]:
        return list(await asyncio.gather(*(provider.client_resolver.resolve(url) for _ in range(10))))

    clients = asyncio.run(many())
    assert all(c.client_id == url for c in clients)
    assert server.hits["/client.json"] == 1


def test_disabled_document_client_is_not_refetched(provider: Provider, server: DocumentServer) -> None:
    url = server.document("/client.json", headers={"Cache-Control": "no-store"})
    resolve(provider, url)
    provider.clients.set_enabled(url, False)
    server.routes["/client.json"] = Route(500, b"{}")
    client = resolve(provider, url)
    assert client is not None and not client.enabled  # the operator's switch, not the document's
    assert server.hits["/client.json"] == 1


def test_cimd_disabled_treats_urls_as_unknown_ids(db_url: str, tmp_path: Path, ca: trustme.CA,
                                                  server: DocumentServer) -> None:
    prov = make_provider(db_url, tmp_path, ca, cimd_enabled=False)
    try:
        assert resolve(prov, server.document("/client.json")) is None
        assert sum(server.hits.values()) == 0
        from idp.oauth2 import metadata

        assert "client_id_metadata_document_supported" not in metadata.authorization_server_metadata(prov.settings)
    finally:
        prov.close()
