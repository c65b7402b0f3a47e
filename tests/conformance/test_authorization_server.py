"""The official MCP conformance suite's authorization-server scenarios pass against the IdP.

``conformance authorization --url ISSUER --client-id ID --resource URI --port P`` runs
``authorization-server-metadata-endpoint`` (RFC 8414 metadata: endpoints, ``code`` and ``S256``,
issuer, CIMD support) and ``authorization-code-grant``: the suite builds an authorization request
(PKCE S256, state, resource; no scope), prints the URL for a person to open, waits for the
redirect at its own callback server on ``http://127.0.0.1:P/callback``, checks the response
(``code``, ``state``, RFC 9207 ``iss``) and redeems the code at the token endpoint (JSON,
``Cache-Control: no-store``, ``access_token``, ``token_type``).

The "person" is headless: the test reads the URL the suite prints, follows the IdP's pages with
``tests/interop/headless_login.py`` (local-account login, consent form) and delivers the final
redirect to the suite's callback server, as a browser would. The operator's part is the real CLI:
``idp clients add --public --redirect-uri``, ``idp resources add``, ``idp users add``.

The same run checks the OpenID Connect discovery document against the official clients' own
schemas (the TypeScript SDK's ``OpenIdProviderDiscoveryMetadataSchema``, the Python SDK's
``OAuthMetadata``).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from idp_testing import ROOT, ServerProcess, env_for, free_port, random_kek, run_cli
from interop.headless_login import Person
from test_conformance_suite import conformance_cli

from idp.config import Settings
from idp.provider import Provider

__all__ = ["conformance_cli"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 120  # for the IdP process to answer /healthz on a loaded machine
RUN_TIMEOUT = 120  # the suite itself waits up to 5 minutes for the callback; we do not
USER, PASSWORD = "conformance", "a long enough test password"
RESOURCE = "http://127.0.0.1:9/mcp"  # registered, never contacted (the suite only asks for a token)


@dataclass
class AS:
    url: str
    env: dict[str, str]
    client_id: str
    port: int  # of the suite's callback server


@pytest.fixture(scope="module")
def authorization_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AS]:
    base = tmp_path_factory.mktemp("conformance-as")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{base / 'idp.db'}",
                        keys_dir=base / "keys", keystore_kek=random_kek())
    Provider.open(settings).close()  # migrate and create the signing key
    env = env_for(settings)
    callback_port = free_port()

    def cli(*args: str, stdin: str | None = None) -> Any:
        done = run_cli(*args, "--json", env=env, input=stdin)
        assert done.returncode == 0, f"idp {' '.join(args)}: {done.stdout}{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    cli("resources", "add", RESOURCE, "--name", "Conformance MCP server")
    cli("users", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    client = cli("clients", "add", "conformance-suite", "--public",
                 "--redirect-uri", f"http://127.0.0.1:{callback_port}/callback")
    process = ServerProcess(env, port, ready_timeout=STARTUP_TIMEOUT)
    try:
        yield AS(settings.issuer, env, client["client_id"], callback_port)
    finally:
        process.stop()


@dataclass
class SuiteRun:
    checks: dict[str, list[dict[str, Any]]]  # scenario -> checks
    stdout: str
    person: Person

    def check(self, check_id: str) -> dict[str, Any]:
        found = [c for checks in self.checks.values() for c in checks if c["id"] == check_id]
        assert len(found) == 1, f"{check_id}: {found}\n{self.stdout}"
        return found[0]


def run_authorization_suite(cli: list[str], server: AS, out: Path) -> SuiteRun:
    """Run the suite, playing the person at the browser when it prints the authorization URL."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([*cli, "authorization", "--url", server.url, "--client-id", server.client_id,
                             "--resource", RESOURCE, "--port", str(server.port), "--output-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out)
    assert proc.stdout is not None
    watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
    watchdog.start()
    person = Person(USER, PASSWORD)
    lines: list[str] = []
    try:
        expect_url = False
        for line in proc.stdout:
            lines.append(line)
            if "Access the following URL" in line:
                expect_url = True
            elif expect_url and line.startswith("http"):
                expect_url = False
                callback = person(line.strip())
                # The browser loads the redirect URI: that is the suite's callback server.
                httpx.get(callback, timeout=10)
        proc.wait(30)
    finally:
        watchdog.cancel()
        person.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(lines)
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in out.rglob("checks.json"):
        checks[path.parent.name] = json.loads(path.read_text())
    assert checks, f"the suite wrote no results (exit {proc.returncode}):\n{stdout}"
    return SuiteRun(checks, stdout, person)


@pytest.fixture(scope="module")
def suite(conformance_cli: list[str], authorization_server: AS, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    return run_authorization_suite(conformance_cli, authorization_server, tmp_path_factory.mktemp("suite"))


def test_metadata_scenario_passes(suite: SuiteRun) -> None:
    assert suite.check("authorization-server-metadata")["status"] == "SUCCESS", suite.stdout
    # The 2025-11-25 SHOULD: Client ID Metadata Documents (a WARNING when missing).
    assert suite.check("authorization-server-metadata-cimd")["status"] == "SUCCESS", suite.stdout


def test_authorization_code_grant_scenario_passes(suite: SuiteRun, authorization_server: AS) -> None:
    check = suite.check("authorization-code-grant")
    assert check["status"] == "SUCCESS", f"{check}\n{suite.stdout}"
    # It really went through the IdP's pages: one login (the suite asks for no scope, so there is
    # no capability to consent to), then back to the suite.
    assert suite.person.logins == 1 and len(suite.person.consents) <= 1, suite.person.pages
    back = urlsplit(suite.person.callbacks[-1])
    assert f"{back.scheme}://{back.netloc}{back.path}" == f"http://127.0.0.1:{authorization_server.port}/callback"
    assert parse_qs(back.query)["iss"] == [authorization_server.url]  # RFC 9207
    every = [c for checks in suite.checks.values() for c in checks]
    assert all(c["status"] in ("SUCCESS", "INFO") for c in every), json.dumps(every, indent=1)[:5000]


def test_discovery_documents_satisfy_the_official_clients_schemas(conformance_cli: list[str],
                                                                  authorization_server: AS) -> None:
    """OpenID Connect Discovery 1.0 §3 and RFC 8414 as the SDKs parse them: the TypeScript SDK's
    zod schemas (the suite's own copy of the SDK) and the Python SDK's pydantic models."""
    oidc = httpx.get(f"{authorization_server.url}/.well-known/openid-configuration", timeout=10).json()
    oauth = httpx.get(f"{authorization_server.url}/.well-known/oauth-authorization-server", timeout=10).json()
    for member in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                   "subject_types_supported", "id_token_signing_alg_values_supported", "userinfo_endpoint"):
        assert oidc.get(member), member  # REQUIRED (userinfo: RECOMMENDED, and we serve one)
    from mcp.shared.auth import OAuthMetadata

    OAuthMetadata.model_validate(oauth)
    OAuthMetadata.model_validate(oidc)
    sdk = HERE / "node_modules" / "@modelcontextprotocol" / "sdk" / "dist" / "esm" / "shared" / "auth.js"
    if not sdk.exists():  # the suite bundles the SDK; use the interop copy otherwise
        sdk = ROOT / "tests" / "interop" / "ts" / "node_modules" / "@modelcontextprotocol" / "sdk" / "dist" / "esm" \
            / "shared" / "auth.js"
    script = (f"import {{ OpenIdProviderDiscoveryMetadataSchema as O, OAuthMetadataSchema as A }} from "
              f"{json.dumps(sdk.as_uri())};\n"
              "import { readFileSync } from 'node:fs';\n"
              "const [oidc, oauth] = JSON.parse(readFileSync(0, 'utf8'));\n"
              "const a = O.safeParse(oidc), b = A.safeParse(oauth);\n"
              "console.log(JSON.stringify({oidc: a.success ? null : a.error.issues, oauth: b.success ? null : "
              "b.error.issues}));\n")
    done = subprocess.run([conformance_cli[0], "--input-type=module", "-e", script], input=json.dumps([oidc, oauth]),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"oidc": None, "oauth": None}, done.stdout
