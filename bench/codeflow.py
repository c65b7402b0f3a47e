"""Authorization-code benchmark: CBST's IdP side by side with node-oidc-provider.

Two scenarios, the same requests to both servers, one public client (no client secret, PKCE
S256), one user who logged in once and whose consent is remembered:

- ``code``: the authorization code round trip. ``GET <authorization endpoint>`` with the
  session cookie and a fresh PKCE challenge -> a 302/303 to the redirect URI with ``code``
  (``state`` and ``iss`` checked), then ``POST /token`` ``grant_type=authorization_code`` with
  the verifier -> an access token (JWT) and a refresh token. One operation = both requests.
- ``refresh``: ``POST /token`` ``grant_type=refresh_token`` with the refresh token of the
  previous answer (rotation: every answer carries the next one). One operation = one request.

Setup per server (before anything is measured): the one interactive login and consent are
done through the server's own pages (``bench/peer/codeflow.js`` answers its interactions
without a form; ours shows its login and consent forms, which the setup fills in and
submits), then the setup checks that a second authorization request comes straight back
with a code, and that the code yields tokens. Any other answer fails the run loudly.

The driver (`Driver`) is one asyncio client for both servers: c virtual clients, each on
its own keep-alive HTTP/1.1 connection, each doing its operations back to back; a run ends
after `duration` seconds or `max_ops` operations, whichever comes first. It is a small
hand-written HTTP/1.1 client on uvloop (not httpx: that costs several times more CPU per
request than the servers under test here); its own ceiling is measured against a canned
-response server (``--driver-ceiling``, on by default) and reported next to the results.

Servers: one process each (oidc-provider keeps sessions, grants and codes in its process's
memory, so one Node process; ours ``idp serve --workers 1``), same machine, loopback.
Rounds alternate the order (peer, ours / ours, peer / ...); each measured run follows a
warm-up run; the figure per point is the median over rounds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html.parser
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from _common import (BENCH_DIR, REPO_DIR, RESULTS_DIR, dist_version, git_info, machine_info,
                     now_iso, run_text)
from token_endpoint import _group_cpu_ticks, _machine_busy_ticks, free_port, wait_quiet

PEER_DIR = BENCH_DIR / "peer"
AUDIENCE = "https://mcp.example.test/mcp"
TOOL = "search"
SCOPE = f"tools/call:{TOOL}"                 # a read-only tool: a remembered consent covers it
REQUEST_SCOPE = f"offline_access {SCOPE}"
REDIRECT_URI = "http://127.0.0.1:9/callback"   # never contacted: the driver reads the Location
CLIENT_NAME = "bench-public"
USER, PASSWORD = "bench-user", "bench-password-0123456789"
SCENARIOS = ("code", "refresh")


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# HTTP/1.1 client: just enough for keep-alive request/response with Content-Length or chunked
# --------------------------------------------------------------------------------------

class HTTPError(Exception):
    pass


class Conn:
    """One keep-alive connection; requests are sequential."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._host_hdr = f"Host: {host}:{port}\r\n".encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method: str, target: str, headers: str = "",
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {target} HTTP/1.1\r\n".encode() + self._host_hdr + headers.encode()
        if body or method == "POST":
            head += (b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n")
        self.writer.write(head + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0][9:12])
        hdrs: dict[str, str] = {}
        cookies: list[str] = []
        for ln in lines[1:]:
            if not ln:
                continue
            k, _, v = ln.partition(":")
            k = k.strip().lower()
            v = v.strip()
            if k == "set-cookie":
                cookies.append(v)
            else:
                hdrs[k] = v
        if cookies:
            hdrs["set-cookie"] = "\n".join(cookies)
        if "content-length" in hdrs:
            data = await self.reader.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked()
        else:
            data = b""
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, data

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------

@dataclass
class Target:
    key: str                                   # "peer" | "ours" | "canned"
    label: str
    start: list[str]                           # argv, templated ({port}, {tmpdir}, {venv})
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # run before start, in order: argv, or (argv, stdin text); a JSON line with client_id is read
    setup: list[list[str] | tuple[list[str], str]] = field(default_factory=list)
    after_start: Callable[["Proc"], None] | None = None     # e.g. register via HTTP
    ready_path: str = "/.well-known/openid-configuration"
    client_id: str = CLIENT_NAME                # replaced by setup output that has client_id
    login: dict[str, str] = field(default_factory=dict)     # form fields for a login page
    session_cookie: Callable[[str], bool] = lambda name: True   # which cookies the loop sends
    versions: Callable[[], dict] | None = None
    prepare: Callable[[], None] | None = None


def peer_target() -> Target:
    def prepare() -> None:
        if not shutil.which("node") or not shutil.which("npm"):
            raise RuntimeError("node and npm are needed for the peer (oidc-provider)")
        if not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            log("npm ci in bench/peer (node_modules missing)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True)

    def versions() -> dict:
        v = {"node": run_text(["node", "--version"])}
        try:
            v["oidc-provider"] = json.loads(
                (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").read_text()).get("version")
        except OSError:
            v["oidc-provider"] = None
        return v

    return Target(
        key="peer", label="oidc-provider (one Node process)",
        start=["node", "codeflow.js", "{port}"],
        env={"NODE_ENV": "production", "PEER_HOST": "127.0.0.1", "PEER_CLIENT_ID": CLIENT_NAME,
             "PEER_REDIRECT_URI": REDIRECT_URI, "PEER_AUDIENCE": AUDIENCE, "PEER_SCOPE": SCOPE,
             "PEER_ACCOUNT": USER},
        cwd=str(PEER_DIR),
        session_cookie=lambda name: name.startswith("_session"),
        versions=versions, prepare=prepare,
    )


def ours_target(venv: Path, src: Path) -> Target:
    """CBST's IdP from the checkout `src` (PYTHONPATH, the venv's packages): a user, a resource
    with a catalogue (one read-only tool), a public client; then `idp serve --workers 1`."""
    idp = [str(venv / "bin" / "python"), "-m", "idp.cli"]
    catalogue = {"tools": [{"name": TOOL, "title": "Search", "description": "Search the documents",
                            "annotations": {"readOnlyHint": True}}]}
    set_catalogue = ("import json, sys\n"
                     "from idp.cli.common import provider\n"
                     "with provider() as prov:\n"
                     "    prov.resources.set_catalogue(sys.argv[1], json.loads(sys.argv[2]), actor='bench')\n")
    return Target(
        key="ours", label="CBST idp (uvicorn, one worker)",
        start=[*idp, "serve", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
        env={"PYTHONPATH": str(src),
             "IDP_ISSUER": "http://127.0.0.1:{port}",
             "IDP_DATABASE_URL": "sqlite:///{tmpdir}/idp.db",
             "IDP_KEYS_DIR": "{tmpdir}/keys",
             "IDP_KEYSTORE_PASSPHRASE": "bench-passphrase",
             "IDP_LOG_LEVEL": "warning",
             # One driver on one address stands for many clients (docs/operations.md).
             "IDP_CLIENT_CONNECTIONS": "0"},
        cwd="{tmpdir}",
        setup=[
            ([*idp, "users", "add", USER, "--password-stdin", "--json"], PASSWORD + "\n"),
            [*idp, "resources", "add", AUDIENCE, "--name", "Bench documents", "--json"],
            [str(venv / "bin" / "python"), "-c", set_catalogue, AUDIENCE, json.dumps(catalogue)],
            [*idp, "clients", "add", CLIENT_NAME, "--public", "--redirect-uri", REDIRECT_URI,
             "--audience", AUDIENCE, "--grant-type", "authorization_code", "--grant-type", "refresh_token",
             "--json"],
        ],
        login={"username": USER, "password": PASSWORD},
        versions=lambda: _python_versions(str(venv / "bin" / "python"),
                                          ["cbst", "fastapi", "starlette", "uvicorn", "uvloop",
                                           "httptools", "cryptography", "sqlalchemy", "jinja2", "argon2-cffi"]),
    )


def canned_target() -> Target:
    """The driver's ceiling: a server answering every request with a fixed response at once."""
    return Target(key="canned", label="canned responses (driver ceiling)",
                  start=[sys.executable, str(Path(__file__).resolve()), "--canned-server", "{port}"],
                  ready_path="/.well-known/openid-configuration")


def _python_versions(python: str, dists: list[str]) -> dict:
    code = ("import sys, json, importlib.metadata as m\n"
            "out = {'python': sys.version.split()[0]}\n"
            f"for d in {dists!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))")
    txt = run_text([python, "-c", code])
    return json.loads(txt) if txt else {}


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

class Proc:
    """A started server: own process group, log file, port; discovery and session state."""

    def __init__(self, t: Target, tmpdir: Path):
        self.t = t
        self.tmpdir = tmpdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = tmpdir / f"{t.key}.log"
        self.argv: list[str] = []
        self.client_id = t.client_id
        self.meta: dict = {}
        self.cookie = ""              # Cookie header value the loop sends
        self.setup_info: dict = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fmt(self, s: str) -> str:
        # Only these placeholders (arguments may be JSON, with braces of their own).
        for k, v in (("port", self.port), ("tmpdir", self.tmpdir), ("python", sys.executable), ("bench", BENCH_DIR)):
            s = s.replace("{" + k + "}", str(v))
        return s

    def start(self) -> None:
        env = dict(os.environ)
        env.update({k: self.fmt(v) for k, v in self.t.env.items()})
        cwd = self.fmt(self.t.cwd) if self.t.cwd else None
        for cmd in self.t.setup:
            stdin = None
            if isinstance(cmd, tuple):
                cmd, stdin = cmd
            argv = [self.fmt(a) for a in cmd]
            log(f"{self.t.key}: setup: {' '.join(argv)[:200]}")
            out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, input=stdin)
            if out.returncode != 0:
                raise RuntimeError(f"{self.t.key}: setup command failed ({out.returncode}): "
                                   f"{' '.join(argv)}\n{out.stdout}\n{out.stderr}")
            found = _json_with(out.stdout, "client_id")
            if found and isinstance(found.get("client_id"), str):
                self.client_id = found["client_id"]
        self.argv = [self.fmt(a) for a in self.t.start]
        log(f"{self.t.key}: start: {' '.join(self.argv)}  (log {self.log_path})")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.t.key}: exited with {self.proc.returncode} before it was "
                                   f"ready:\n{self.log_tail()}")
            try:
                st, _, body = asyncio.run(_one("127.0.0.1", self.port, "GET", self.t.ready_path))
                if st == 200:
                    self.meta = json.loads(body)
                    log(f"{self.t.key}: ready on {self.base_url}")
                    return
                last = f"status {st}"
            except (OSError, ValueError, asyncio.IncompleteReadError) as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"{self.t.key}: not ready after 60 s ({last}):\n{self.log_tail()}")

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.t.key}: exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def cpu_ticks(self) -> int:
        return _group_cpu_ticks(self.proc.pid) if self.proc else 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        log(f"{self.t.key}: stopped")

    # -- endpoints -------------------------------------------------------------------

    def path_of(self, meta_key: str, default: str) -> str:
        url = self.meta.get(meta_key)
        if not url:
            return default
        u = urllib.parse.urlsplit(url)
        return u.path

    @property
    def authorize_path(self) -> str:
        return self.path_of("authorization_endpoint", "/authorize")

    @property
    def token_path(self) -> str:
        return self.path_of("token_endpoint", "/token")

    @property
    def issuer(self) -> str:
        return self.meta.get("issuer", self.base_url)


def _json_with(text: str, key: str) -> dict | None:
    for c in [text.strip()] + text.splitlines()[::-1]:
        c = c.strip()
        if c.startswith("{"):
            try:
                obj = json.loads(c)
            except ValueError:
                continue
            if isinstance(obj, dict) and key in obj:
                return obj
    return None


async def _one(host: str, port: int, method: str, target: str, headers: str = "",
               body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    c = Conn(host, port)
    try:
        return await asyncio.wait_for(c.request(method, target, headers, body), 10)
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# Setup: one login + consent through the server's own pages, then checks
# --------------------------------------------------------------------------------------

class _Forms(html.parser.HTMLParser):
    """The forms of a page: action, method, inputs (name, type, value, checked), buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                               "inputs": [], "buttons": []})
        elif self.forms and tag in ("input", "select", "textarea"):
            self.forms[-1]["inputs"].append({"name": a.get("name"), "type": a.get("type", "text").lower(),
                                             "value": a.get("value", ""), "checked": "checked" in a})
        elif self.forms and tag == "button":
            self.forms[-1]["buttons"].append({"name": a.get("name"), "value": a.get("value", ""),
                                              "type": a.get("type", "submit").lower()})


APPROVE_WORDS = re.compile(r"approve|allow|accept|consent|yes|grant", re.I)


def _fill(form: dict, login: dict[str, str]) -> list[tuple[str, str]]:
    """Form fields to submit: login fields filled, every checkbox ticked, the approve button."""
    out: list[tuple[str, str]] = []
    for i in form["inputs"]:
        name, typ = i["name"], i["type"]
        if not name:
            continue
        if name in login:
            out.append((name, login[name]))
        elif typ == "password" and "password" in login:
            out.append((name, login["password"]))
        elif typ in ("checkbox",):
            out.append((name, i["value"] or "on"))
        elif typ == "radio":
            if i["checked"]:
                out.append((name, i["value"]))
        elif typ in ("submit", "image", "button", "reset"):
            continue
        else:
            out.append((name, i["value"]))
    submits = [b for b in form["buttons"] if b["type"] == "submit" and b["name"]]
    submits += [{"name": i["name"], "value": i["value"]} for i in form["inputs"] if i["type"] == "submit" and i["name"]]
    if submits:
        chosen = next((b for b in submits if APPROVE_WORDS.search(f"{b['name']} {b['value']}")), submits[0])
        out.append((chosen["name"], chosen["value"]))
    return out


class Session:
    """A cookie jar on one connection, following redirects on the server's origin."""

    def __init__(self, p: Proc):
        self.p = p
        self.jar: dict[str, str] = {}
        self.conn = Conn("127.0.0.1", p.port)
        self.trace: list[str] = []

    def cookie_header(self, only: Callable[[str], bool] = lambda n: True) -> str:
        cs = "; ".join(f"{k}={v}" for k, v in self.jar.items() if only(k))
        return f"Cookie: {cs}\r\n" if cs else ""

    async def send(self, method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        st, h, b = await asyncio.wait_for(self.conn.request(method, target, self.cookie_header(), body), 15)
        for line in h.get("set-cookie", "").split("\n"):
            if not line:
                continue
            nv = line.split(";", 1)[0]
            name, _, value = nv.partition("=")
            attrs = line.lower()
            if not value or "max-age=0" in attrs or "expires=thu, 01 jan 1970" in attrs:
                self.jar.pop(name.strip(), None)
            else:
                self.jar[name.strip()] = value
        self.trace.append(f"{method} {target.split('?')[0]} -> {st}")
        return st, h, b

    def local(self, url: str, base: str) -> str | None:
        """Path+query of `url` (resolved against `base`) if it is on the server, else None."""
        full = urllib.parse.urljoin(base, url)
        u = urllib.parse.urlsplit(full)
        if f"{u.scheme}://{u.netloc}" != self.p.base_url:
            return None
        return u.path + (f"?{u.query}" if u.query else "")


def authorize_target(p: Proc, challenge: str, state: str) -> str:
    q = urllib.parse.urlencode({"response_type": "code", "client_id": p.client_id, "redirect_uri": REDIRECT_URI,
                                "scope": REQUEST_SCOPE, "resource": AUDIENCE, "code_challenge": challenge,
                                "code_challenge_method": "S256", "state": state})
    return f"{p.authorize_path}?{q}"


def code_from(p: Proc, status: int, hdrs: dict[str, str], state: str) -> str:
    """The code of an authorization response; raises unless it is a proper one."""
    loc = hdrs.get("location", "")
    if status not in (302, 303) or not loc.startswith(REDIRECT_URI + "?"):
        raise HTTPError(f"authorization: expected a redirect to {REDIRECT_URI} with a code, got {status} "
                        f"Location={loc[:200]!r}")
    q = urllib.parse.parse_qs(loc.split("?", 1)[1])
    if "code" not in q:
        raise HTTPError(f"authorization: no code in {loc[:300]!r}")
    if q.get("state") != [state]:
        raise HTTPError(f"authorization: state {q.get('state')} != {state}")
    if "iss" in q and q["iss"] != [p.issuer]:
        raise HTTPError(f"authorization: iss {q['iss']} != {p.issuer}")
    return q["code"][0]


def code_form(p: Proc, code: str, verifier: str) -> bytes:
    return urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                                   "code_verifier": verifier, "client_id": p.client_id,
                                   "resource": AUDIENCE}).encode()


def refresh_form(p: Proc, rt: str) -> bytes:
    return urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": rt, "client_id": p.client_id,
                                   "resource": AUDIENCE}).encode()


def tokens_from(status: int, body: bytes) -> tuple[str, str]:
    if status != 200:
        raise HTTPError(f"token: {status} {body[:300]!r}")
    d = json.loads(body)
    at, rt = d.get("access_token"), d.get("refresh_token")
    if not isinstance(at, str) or at.count(".") != 2:
        raise HTTPError(f"token: no JWT access token in {body[:300]!r}")
    if not isinstance(rt, str) or not rt:
        raise HTTPError(f"token: no refresh token in {body[:300]!r}")
    return at, rt


async def interactive_setup(p: Proc) -> dict:
    """Log in and consent once through the server's pages; return what the checks saw."""
    s = Session(p)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    target: str | None = authorize_target(p, challenge, state)
    method, body = "GET", b""
    page_base = p.base_url
    forms_submitted = 0
    for _step in range(20):
        assert target is not None
        st, h, b = await s.send(method, target, body)
        loc = h.get("location")
        if st in (301, 302, 303, 307) and loc:
            if loc.startswith(REDIRECT_URI):
                code = code_from(p, st, h, state)
                break
            nxt = s.local(loc, p.base_url + target)
            if nxt is None:
                raise HTTPError(f"{p.t.key}: setup redirected off the server: {loc[:200]}")
            page_base = p.base_url + nxt
            target, method, body = nxt, "GET", b""
            continue
        if st == 200 and "html" in h.get("content-type", ""):
            parser = _Forms()
            parser.feed(b.decode("utf-8", "replace"))
            forms = [f for f in parser.forms if f["method"] == "post"]
            if not forms:
                raise HTTPError(f"{p.t.key}: setup: page without a POST form at {target}: {b[:400]!r}")
            form = forms[0]
            fields = _fill(form, p.t.login)
            nxt = s.local(form["action"] or page_base, page_base)
            if nxt is None:
                raise HTTPError(f"{p.t.key}: setup: form posts off the server: {form['action']}")
            target, method, body = nxt, "POST", urllib.parse.urlencode(fields).encode()
            forms_submitted += 1
            continue
        raise HTTPError(f"{p.t.key}: setup: unexpected {st} at {target}: {b[:400]!r} (trace {s.trace})")
    else:
        raise HTTPError(f"{p.t.key}: setup: no code after 20 steps (trace {s.trace})")
    st, h, b = await s.send("POST", p.token_path, code_form(p, code, verifier))
    at, rt = tokens_from(st, b)
    setup_trace = list(s.trace)
    # The remembered consent: a second request must come straight back with a code.
    p.cookie = s.cookie_header(p.t.session_cookie)
    if not p.cookie:
        raise HTTPError(f"{p.t.key}: setup: no session cookie after login (jar {list(s.jar)})")
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    st, h, b = await asyncio.wait_for(s.conn.request("GET", authorize_target(p, challenge, state), p.cookie), 15)
    code = code_from(p, st, h, state)
    st, h, b = await s.conn.request("POST", p.token_path, "", code_form(p, code, verifier))
    at, rt = tokens_from(st, b)
    st, h, b = await s.conn.request("POST", p.token_path, "", refresh_form(p, rt))
    at2, rt2 = tokens_from(st, b)
    if rt2 == rt:
        raise HTTPError(f"{p.t.key}: refresh token not rotated")
    s.conn.close()
    header, claims = json.loads(_b64d(at.split(".")[0])), json.loads(_b64d(at.split(".")[1]))
    info = {"setup_requests": setup_trace, "forms_submitted": forms_submitted,
            "cookies_sent": sorted(n for n in s.jar if p.t.session_cookie(n)),
            "authorize_status": "redirect with code, no page", "jwt_header": header, "claims": sorted(claims),
            "aud": claims.get("aud"), "scope": claims.get("scope"), "token_bytes": len(at),
            "refresh_rotated": True}
    log(f"{p.t.key}: setup ok: {len(setup_trace)} requests, {forms_submitted} form(s); then authorize -> code "
        f"directly; token alg={header.get('alg')} aud={claims.get('aud')} scope={claims.get('scope')!r}")
    return info


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------

@dataclass
class RunStats:
    ops: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)       # per operation, seconds
    lat_a: list[float] = field(default_factory=list)     # code: authorize step
    lat_t: list[float] = field(default_factory=list)     # code: token step

    def error(self, e: BaseException) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{type(e).__name__}: {e}"[:300])


class Driver:
    def __init__(self, p: Proc, scenario: str, concurrency: int, duration: float, max_ops: int,
                 canned: bool = False):
        self.p, self.scenario, self.c = p, scenario, concurrency
        self.duration, self.max_ops = duration, max_ops
        self.canned = canned
        self.stats = RunStats()

    async def _code_op(self, conn: Conn) -> str:
        p, st_ = self.p, self.stats
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        t0 = time.perf_counter()
        st, h, _ = await conn.request("GET", authorize_target(p, challenge, state), p.cookie)
        t1 = time.perf_counter()
        code = code_from(p, st, h, state)
        st, h, b = await conn.request("POST", p.token_path, "", code_form(p, code, verifier))
        t2 = time.perf_counter()
        _at, rt = tokens_from(st, b)
        st_.lat_a.append(t1 - t0)
        st_.lat_t.append(t2 - t1)
        st_.lat.append(t2 - t0)
        return rt

    async def _refresh_op(self, conn: Conn, rt: str) -> str:
        t0 = time.perf_counter()
        st, h, b = await conn.request("POST", self.p.token_path, "", refresh_form(self.p, rt))
        t1 = time.perf_counter()
        _at, rt = tokens_from(st, b)
        self.stats.lat.append(t1 - t0)
        return rt

    async def _prepare(self) -> tuple[Conn, str | None]:
        """A connection per client, and for `refresh` its first refresh token (not measured)."""
        conn = Conn("127.0.0.1", self.p.port)
        await conn.open()
        rt = None
        if self.scenario == "refresh":
            verifier, challenge = pkce_pair()
            state = secrets.token_urlsafe(8)
            st, h, _ = await conn.request("GET", authorize_target(self.p, challenge, state), self.p.cookie)
            st, h, b = await conn.request("POST", self.p.token_path, "",
                                          code_form(self.p, code_from(self.p, st, h, state), verifier))
            rt = tokens_from(st, b)[1]
        return conn, rt

    async def _client(self, conn: Conn, rt: str | None, deadline: float) -> None:
        try:
            while time.perf_counter() < deadline and self.stats.ops < self.max_ops:
                try:
                    if self.scenario == "refresh":
                        if rt is None:     # the chain broke (an error): start a new one
                            conn.close()
                            conn, rt = await self._prepare()
                        rt = await self._refresh_op(conn, rt)
                    else:
                        await self._code_op(conn)
                    self.stats.ops += 1
                except (HTTPError, ValueError, OSError, asyncio.IncompleteReadError,
                        asyncio.LimitOverrunError) as e:
                    self.stats.error(e)
                    rt = None
                    conn.close()
                    conn = Conn("127.0.0.1", self.p.port)
        finally:
            conn.close()

    async def run(self) -> dict:
        prepared = await asyncio.gather(*(self._prepare() for _ in range(self.c)))
        t0 = time.perf_counter()
        deadline = t0 + self.duration
        await asyncio.gather(*(self._client(conn, rt, deadline) for conn, rt in prepared))
        return {"elapsed": time.perf_counter() - t0}


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))] * 1000


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def measure(p: Proc, scenario: str, c: int, duration: float, max_ops: int) -> dict:
    p.alive()
    d = Driver(p, scenario, c, duration, max_ops)
    loop = _new_loop()
    cpu0, busy0 = p.cpu_ticks(), _machine_busy_ticks()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        out = loop.run_until_complete(asyncio.wait_for(d.run(), duration + 60))
    finally:
        loop.close()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1, busy1 = p.cpu_ticks(), _machine_busy_ticks()
    tck = os.sysconf("SC_CLK_TCK")
    secs = out["elapsed"]
    st = d.stats
    server_s = (cpu1 - cpu0) / tck
    driver_s = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    other_s = max(0.0, (busy1 - busy0) / tck - server_s - driver_s)
    r = {
        "scenario": scenario, "concurrency": c, "seconds": secs, "ops": st.ops, "errors": st.errors,
        "first_errors": st.first_errors,
        "ops_per_s": st.ops / secs if secs else 0.0,
        "http_requests_per_op": 2 if scenario == "code" else 1,
        "p50_ms": _pct(st.lat, 50), "p90_ms": _pct(st.lat, 90), "p99_ms": _pct(st.lat, 99),
        "max_ms": max(st.lat) * 1000 if st.lat else None,
        "server_cpu_us_per_op": server_s * 1e6 / st.ops if st.ops else None,
        "server_cores": server_s / secs if secs else None,
        "driver_cores": driver_s / secs if secs else None,
        "other_cores": other_s / secs if secs else None,
        "valid": st.errors == 0 and st.ops > 0,
        "bounded_by": "count" if st.ops >= max_ops else "time",
    }
    if scenario == "code":
        r.update(authorize_p50_ms=_pct(st.lat_a, 50), authorize_p99_ms=_pct(st.lat_a, 99),
                 token_p50_ms=_pct(st.lat_t, 50), token_p99_ms=_pct(st.lat_t, 99))
    return r


# --------------------------------------------------------------------------------------
# Canned-response server (driver ceiling)
# --------------------------------------------------------------------------------------

def canned_server(port: int) -> None:
    """Answers discovery, an authorization redirect with a code, and a token response at once."""
    issuer = f"http://127.0.0.1:{port}"
    at = ".".join(base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (
        b'{"alg":"ES256","typ":"at+jwt"}', json.dumps({"aud": AUDIENCE, "scope": SCOPE}).encode(), b"s" * 64))

    def resp(status: str, headers: str, body: bytes) -> bytes:
        return (f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body

    meta = resp("200 OK", "Content-Type: application/json\r\n", json.dumps(
        {"issuer": issuer, "authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token"}).encode())
    token = resp("200 OK", "Content-Type: application/json\r\nCache-Control: no-store\r\n", json.dumps(
        {"access_token": at, "token_type": "Bearer", "expires_in": 300, "refresh_token": "r" * 43}).encode())

    class P(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.t, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                head = self.buf[:i].decode("latin-1")
                n = 0
                m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                if m:
                    n = int(m.group(1))
                if len(self.buf) < i + 4 + n:
                    return
                self.buf = self.buf[i + 4 + n:]
                target = head.split(" ", 2)[1]
                if target.startswith("/.well-known"):
                    self.t.write(meta)
                elif target.startswith("/authorize"):
                    st = urllib.parse.parse_qs(target.split("?", 1)[1]).get("state", [""])[0]
                    loc = f"{REDIRECT_URI}?code={'c' * 43}&state={st}&iss={urllib.parse.quote(issuer, safe='')}"
                    self.t.write(resp("302 Found", f"Location: {loc}\r\n", b""))
                else:
                    self.t.write(token)

    loop = _new_loop()
    srv = loop.run_until_complete(loop.create_server(P, "127.0.0.1", port))
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    try:
        loop.run_forever()
    finally:
        srv.close()


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------

@dataclass
class Config:
    duration: float = 8.0
    warmup: float = 1.5
    max_ops: int = 20000
    concurrencies: tuple[int, ...] = (1, 8)
    rounds: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    ours: str = "auto"            # auto | idp | none
    venv: Path = REPO_DIR / ".venv"
    idp_src: Path = REPO_DIR    # the checkout whose IdP is measured (PYTHONPATH)
    out_dir: Path = RESULTS_DIR
    quick: bool = False
    quiet_wait: float = 20.0
    quiet_cores: float = 0.15
    disturbed_cores: float = 0.2
    redo_disturbed: int = 1
    tmp_dir: str | None = None
    driver_ceiling: bool = True
    prewarm: float = 4.0          # once per server and scenario before the rounds (JIT, caches)
    profile: bool = False         # py-spy on ours during one extra run per scenario (after the rounds)


def ours_usable(venv: Path, src: Path) -> tuple[bool, str]:
    """Whether the checkout has what the setup needs (the commands and the authorization endpoint)."""
    py = venv / "bin" / "python"
    if not py.exists():
        return False, f"{py} does not exist"
    env = dict(os.environ, PYTHONPATH=str(src))
    for sub in (["users", "add"], ["resources", "add"], ["clients", "add"]):
        out = subprocess.run([str(py), "-m", "idp.cli", *sub, "--help"], capture_output=True, text=True,
                             timeout=60, env=env, cwd=src)
        if out.returncode != 0:
            return False, f"`idp {' '.join(sub)}` is not available in {src}"
    # The authorization endpoint and pages are checked by the setup itself (it fails loudly).
    return True, "ok"


def _point(p: Proc, scenario: str, c: int, cfg: Config) -> dict:
    attempts = []
    for _ in range(1 + max(0, cfg.redo_disturbed)):
        waited, busy = wait_quiet(cfg.quiet_wait, cfg.quiet_cores) if cfg.quiet_wait > 0 else (0.0, None)
        if cfg.warmup > 0:
            measure(p, scenario, c, cfg.warmup, cfg.max_ops)
        r = measure(p, scenario, c, cfg.duration, cfg.max_ops)
        r.update(quiet_waited_s=waited, busy_cores_before=busy)
        attempts.append(r)
        if (r["other_cores"] or 0) <= cfg.disturbed_cores:
            break
        log(f"{p.t.key} {scenario} c={c}: disturbed (other load {r['other_cores']:.2f} cores)")
    r = min(attempts, key=lambda a: a["other_cores"] or 0)
    r["attempts"] = len(attempts)
    return r


def run(cfg: Config) -> dict:
    notes: list[str] = []
    targets = [peer_target()]
    if cfg.ours in ("auto", "idp"):
        ok, why = ours_usable(cfg.venv, cfg.idp_src)
        if ok:
            targets.append(ours_target(cfg.venv, cfg.idp_src))
        elif cfg.ours == "idp":
            raise RuntimeError(f"--ours idp: {why}")
        else:
            log(f"ours not usable ({why}): peer only")
            notes.append(f"ours was not measured: {why}")
    for t in targets:
        if t.prepare:
            t.prepare()
    started = now_iso()
    tmp_root = Path(tempfile.mkdtemp(prefix="cbst-bench-code-", dir=cfg.tmp_dir))
    procs: dict[str, Proc] = {}
    runs: list[dict] = []
    ceiling: list[dict] = []
    keep = False
    try:
        for t in targets:
            d = tmp_root / t.key
            d.mkdir()
            p = Proc(t, d)
            procs[t.key] = p
            p.start()
            loop = _new_loop()
            try:
                p.setup_info = loop.run_until_complete(asyncio.wait_for(interactive_setup(p), 60))
            finally:
                loop.close()
        for p in procs.values():
            for scenario in cfg.scenarios:
                if cfg.prewarm > 0:
                    w = measure(p, scenario, max(cfg.concurrencies), cfg.prewarm, cfg.max_ops)
                    if not w["valid"]:
                        raise RuntimeError(f"{p.t.key}: {scenario} warm-up failed: {w['errors']} errors, "
                                           f"first {w['first_errors'][:2]}")
        order = list(procs.values())
        total = len(cfg.scenarios) * len(cfg.concurrencies) * cfg.rounds * len(order)
        n = 0
        for scenario in cfg.scenarios:
            for c in cfg.concurrencies:
                for r in range(cfg.rounds):
                    for p in (order if r % 2 == 0 else order[::-1]):
                        n += 1
                        res = _point(p, scenario, c, cfg)
                        res.update(target=p.t.key, round=r)
                        runs.append(res)
                        flag = "" if res["valid"] else f"  INVALID: {res['errors']} errors {res['first_errors'][:1]}"
                        log(f"[{n}/{total}] {p.t.key:4s} {scenario:7s} c={c:<2d} r{r}: {res['ops_per_s']:7.0f} op/s  "
                            f"p50 {res['p50_ms'] or 0:6.2f} ms  p99 {res['p99_ms'] or 0:6.2f} ms  "
                            f"cpu {res['server_cpu_us_per_op'] or 0:5.0f} us/op  driver {res['driver_cores']:.2f} "
                            f"other {res['other_cores']:.2f} cores{flag}")
        if cfg.profile and "ours" in procs:
            profile_ours(procs["ours"], cfg)
        if cfg.driver_ceiling:
            ceiling = driver_ceiling(cfg, tmp_root)
    except Exception:
        keep = True
        raise
    finally:
        for p in procs.values():
            p.stop()
        if keep:
            log(f"kept {tmp_root} (server logs) for inspection")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    versions: dict = {"driver": {"python": sys.version.split()[0], "uvloop": dist_version("uvloop")}}
    for t in targets:
        if t.versions:
            versions[t.key] = t.versions()
    result = {
        "benchmark": "codeflow", "started": started, "finished": now_iso(),
        "config": {"duration_s": cfg.duration, "warmup_s": cfg.warmup, "max_ops": cfg.max_ops,
                   "concurrencies": list(cfg.concurrencies), "rounds": cfg.rounds, "scenarios": list(cfg.scenarios),
                   "quick": cfg.quick, "quiet_wait_s": cfg.quiet_wait, "quiet_cores": cfg.quiet_cores,
                   "disturbed_cores": cfg.disturbed_cores, "redo_disturbed": cfg.redo_disturbed,
                   "tmp_dir": str(tmp_root.parent), "scope": REQUEST_SCOPE, "resource": AUDIENCE,
                   "redirect_uri": REDIRECT_URI},
        "machine": machine_info(), "git": git_info(), "versions": versions,
        "idp_src": {"path": str(cfg.idp_src), "commit": run_text(["git", "-C", str(cfg.idp_src), "rev-parse", "--short",
                                                                   "HEAD"]) or "(none)"},
        "targets": {k: {"label": p.t.label, "argv": p.argv,
                        "setup": [[p.fmt(a) for a in (c[0] if isinstance(c, tuple) else c)] for c in p.t.setup],
                        "client_id": p.client_id, "authorization_endpoint": p.authorize_path,
                        "token_endpoint": p.token_path, "check": p.setup_info}
                    for k, p in procs.items()},
        "notes": notes, "runs": runs, "driver_ceiling": ceiling,
        "summary": summarize(runs, cfg),
    }
    write_outputs(result, cfg.out_dir)
    return result


def profile_ours(p: Proc, cfg: Config) -> None:
    """py-spy (all threads, sampled) on ours during one run per scenario at the highest concurrency:
    ``codeflow_profile_<scenario>.txt`` (raw collapsed stacks) and a summary ``codeflow_profile.md``
    (share of the busy samples per function of the IdP, inclusive)."""
    spy = shutil.which("py-spy") or str(cfg.venv / "bin" / "py-spy")
    if not Path(spy).exists():
        log("py-spy not found (pip install py-spy, or the bench extra): no profile")
        return
    c = max(cfg.concurrencies)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Where ours spends its time (py-spy, all threads)", "",
             f"One {cfg.duration:g} s run per scenario at c={c}, sampled at 250 Hz; the share of the samples "
             "in which a thread of the server was busy (not waiting for work), per function (inclusive). "
             "Commits include the fsync (wall time).", ""]
    for scenario in cfg.scenarios:
        raw = cfg.out_dir / f"codeflow_profile_{scenario}.txt"
        proc = subprocess.Popen([spy, "record", "--pid", str(p.proc.pid if p.proc else 0), "--format", "raw",
                                 "-o", str(raw), "--rate", "250", "--nonblocking", "--duration",
                                 str(int(cfg.duration) + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.7)
        r = measure(p, scenario, c, cfg.duration, cfg.max_ops)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not raw.exists():
            log(f"py-spy wrote nothing for {scenario} (ptrace not permitted?)")
            continue
        lines += [f"## {scenario} (c={c}: {r['ops_per_s']:.0f} op/s, server CPU {r['server_cpu_us_per_op'] or 0:.0f} "
                  "µs/op)", "", "| share | function |", "|---:|---|"]
        lines += [f"| {share:.1f}% | `{fn}` |" for share, fn in _profile_top(raw, 40)]
        lines.append("")
    (cfg.out_dir / "codeflow_profile.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {cfg.out_dir}/codeflow_profile.md")


def _profile_top(raw: Path, n: int) -> list[tuple[float, str]]:
    idle = ("_worker (concurrent", "select (selectors", "wait (threading", "get (queue", "run_forever", "_run_once")
    incl: dict[str, int] = {}
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or any(frames[-1].startswith(i) for i in idle):
            continue
        busy += int(count)
        seen = set()
        for f in frames:
            name, _, where = f.partition(" (")
            where = "/" + where.split(":")[0]  # py-spy shows paths relative to sys.path
            for root in ("/idp/", "/sdk/", "/sqlalchemy/engine/base"):
                if root in where:
                    where = root.strip("/").split("/")[0] + "/" + where.split(root, 1)[1] if root != "/sqlalchemy/engine/base" \
                        else "sqlalchemy/engine/base.py"
                    break
            else:
                continue
            key = f"{name} ({where})"
            if key not in seen:
                seen.add(key)
                incl[key] = incl.get(key, 0) + int(count)
    top = sorted(incl.items(), key=lambda kv: -kv[1])[:n]
    return [(100 * v / busy, k) for k, v in top] if busy else []


def driver_ceiling(cfg: Config, tmp_root: Path) -> list[dict]:
    """The same driver against canned responses: the most it can measure on this machine."""
    d = tmp_root / "canned"
    d.mkdir(exist_ok=True)
    p = Proc(canned_target(), d)
    out = []
    try:
        p.start()
        p.cookie = "Cookie: s=1\r\n"
        for scenario in cfg.scenarios:
            for c in cfg.concurrencies:
                r = measure(p, scenario, c, min(cfg.duration, 3.0), cfg.max_ops)
                out.append(r)
                log(f"driver ceiling {scenario} c={c}: {r['ops_per_s']:.0f} op/s, driver {r['driver_cores']:.2f} cores")
    finally:
        p.stop()
    return out


def summarize(runs: list[dict], cfg: Config) -> list[dict]:
    out = []
    for scenario in cfg.scenarios:
        for c in cfg.concurrencies:
            row: dict = {"scenario": scenario, "concurrency": c}
            for key in ("peer", "ours"):
                rs = [r for r in runs if r["target"] == key and r["concurrency"] == c and r["scenario"] == scenario]
                if not rs:
                    continue

                def med(k: str, rs: list[dict] = rs) -> float | None:
                    xs = [r[k] for r in rs if r.get(k) is not None]
                    return statistics.median(xs) if xs else None
                row[key] = {k: med(k) for k in ("ops_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_op",
                                                  "driver_cores", "other_cores", "authorize_p99_ms",
                                                  "token_p99_ms")}
                row[key].update(ops_min=min(r["ops_per_s"] for r in rs), ops_max=max(r["ops_per_s"] for r in rs),
                                other_cores_max=max(r["other_cores"] or 0 for r in rs), rounds=len(rs),
                                invalid_rounds=sum(not r["valid"] for r in rs))
            if "peer" in row and "ours" in row:
                pr, ou = row["peer"], row["ours"]
                row["ratio_ops"] = ou["ops_per_s"] / pr["ops_per_s"] if pr["ops_per_s"] else None
                row["ratio_p99"] = ou["p99_ms"] / pr["p99_ms"] if pr["p99_ms"] and ou["p99_ms"] else None
            out.append(row)
    return out


def _f(x: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def render_markdown(res: dict) -> str:
    cfg, m, v = res["config"], res["machine"], res["versions"]
    lines = ["# Authorization code + refresh: CBST IdP vs node-oidc-provider", ""]
    if cfg["quick"]:
        lines += ["> **Quick smoke run** (short runs, one round): not for quoting.", ""]
    noisy = [r for r in res["runs"] if (r.get("other_cores") or 0) > cfg["disturbed_cores"]]
    if noisy:
        lines += [f"> **{len(noisy)} of {len(res['runs'])} measured runs were disturbed** by other load on the machine "
                  f"(> {cfg['disturbed_cores']} cores besides the server and the driver): indicative only, rerun on a "
                  "quiet machine.", ""]
    lines += [
        f"Public client, PKCE S256, scope `{cfg['scope']}`, resource `{cfg['resource']}`, a user logged in once with "
        "the consent remembered. **code** = `GET` authorization endpoint with the session cookie → redirect with a code "
        "→ `POST /token` (authorization_code + verifier) → JWT access token + refresh token (one op = both requests). "
        "**refresh** = `POST /token` (refresh_token, rotated) (one op = one request). "
        f"Each run {cfg['duration_s']:g} s or {cfg['max_ops']} ops, after a {cfg['warmup_s']:g} s warm-up; median of "
        f"{cfg['rounds']} interleaved round(s). c = concurrent clients, each on its own keep-alive connection. "
        f"One server process each; driver and servers share the machine's {m.get('nproc')} cores.",
        "",
        "| scenario | c | peer op/s | peer p50 ms | peer p99 ms | ours op/s | ours p50 ms | ours p99 ms "
        "| ours/peer op/s | ours/peer p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in res["summary"]:
        p, o = row.get("peer", {}), row.get("ours", {})
        lines.append(
            f"| {row['scenario']} | {row['concurrency']} | {_f(p.get('ops_per_s'))} | {_f(p.get('p50_ms'), '{:.2f}')} "
            f"| {_f(p.get('p99_ms'), '{:.2f}')} | {_f(o.get('ops_per_s'))} | {_f(o.get('p50_ms'), '{:.2f}')} "
            f"| {_f(o.get('p99_ms'), '{:.2f}')} | {_f(row.get('ratio_ops'), '{:.2f}×')} "
            f"| {_f(row.get('ratio_p99'), '{:.2f}×')} |")
    lines += ["", "ours/peer op/s > 1: ours is faster; ours/peer p99 < 1: ours has the lower tail. Target: op/s ratio "
              "≥ 1 and p99 ratio ≤ 1 on both scenarios.", "",
              "| scenario | c | peer CPU µs/op | ours CPU µs/op | peer authorize / token p99 ms "
              "| ours authorize / token p99 ms | peer op/s min–max | ours op/s min–max | driver cores | other load (max) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res["summary"]:
        p, o = row.get("peer", {}), row.get("ours", {})
        split = (lambda x: f"{_f(x.get('authorize_p99_ms'), '{:.2f}')} / {_f(x.get('token_p99_ms'), '{:.2f}')}"
                 if row["scenario"] == "code" and x else "–")
        lines.append(
            f"| {row['scenario']} | {row['concurrency']} | {_f(p.get('server_cpu_us_per_op'))} "
            f"| {_f(o.get('server_cpu_us_per_op'))} | {split(p)} | {split(o)} "
            f"| {_f(p.get('ops_min'))}–{_f(p.get('ops_max'))} | {_f(o.get('ops_min'))}–{_f(o.get('ops_max'))} "
            f"| {_f(max((x.get('driver_cores') or 0) for x in (p, o) if x), '{:.2f}')} "
            f"| {_f(max(x.get('other_cores_max', 0) for x in (p, o) if x), '{:.2f}')} |")
    if res.get("driver_ceiling"):
        lines += ["", "**Driver ceiling** (the same driver against a server answering with canned responses at once): "
                  + ", ".join(f"{r['scenario']} c={r['concurrency']}: {r['ops_per_s']:.0f} op/s "
                              f"(p50 {_f(r['p50_ms'], '{:.2f}')} ms, {r['driver_cores']:.2f} cores)"
                              for r in res["driver_ceiling"])
                  + ". The servers' figures above are well below it when the driver is not what limits them; at c=1 "
                  "the driver's own per-request time is part of every latency, equally for both servers."]
    bad = [r for r in res["runs"] if not r["valid"]]
    if bad:
        lines += ["", "**Invalid runs** (errors; included in the medians):", ""]
        lines += [f"- {r['target']} {r['scenario']} c={r['concurrency']} r{r['round']}: {r['errors']} errors, "
                  f"first: {r['first_errors'][:1]}" for r in bad]
    if noisy:
        lines += ["", "Disturbed runs (other load, cores): " + ", ".join(
            f"{r['target']} {r['scenario']} c={r['concurrency']} r{r['round']} ({r['other_cores']:.2f})" for r in noisy)]
    lines += ["", "## Servers", ""]
    for k, t in res["targets"].items():
        ch = t.get("check", {})
        lines.append(f"- **{k}**: {t['label']}: `{' '.join(t['argv'])}`; authorization `{t['authorization_endpoint']}`,"
                     f" token `{t['token_endpoint']}`; setup: {len(ch.get('setup_requests', []))} requests, "
                     f"{ch.get('forms_submitted')} form(s) submitted, loop sends cookie(s) "
                     f"{', '.join(ch.get('cookies_sent', []))}; access token alg "
                     f"{ch.get('jwt_header', {}).get('alg')}, {ch.get('token_bytes')} bytes, scope {ch.get('scope')!r}, "
                     f"claims {', '.join(ch.get('claims', []))}")
    pv, ov = v.get("peer", {}), v.get("ours", {})
    lines += ["", "## Versions and machine", "",
              f"- peer: node {pv.get('node')}, oidc-provider {pv.get('oidc-provider')}",
              "- ours: " + (", ".join(f"{k} {x}" for k, x in ov.items()) or "n/a"),
              f"- driver: Python {v['driver'].get('python')}, uvloop {v['driver'].get('uvloop')}",
              f"- machine: nproc {m.get('nproc')}, {m.get('cpu_model', '?')}, {m.get('mem_total', '?')}, "
              f"{m.get('os', '?')}, kernel {m.get('kernel')}",
              f"- git: bench {res['git']['commit']}, IdP measured from `{res.get('idp_src', {}).get('path')}` at "
              f"{res.get('idp_src', {}).get('commit')}; run {res['started']} → {res['finished']}"]
    if res["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    lines += ["", "Raw data: `codeflow.json`. Reproduce: `.venv/bin/python bench/run.py --only codeflow`.", ""]
    return "\n".join(lines)


def write_outputs(res: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "codeflow.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "codeflow.md").write_text(render_markdown(res))
    log(f"wrote {out_dir}/codeflow.{{md,json}}")


def print_summary(res: dict) -> None:
    print()
    print(f"{'scenario':>8} {'c':>3} {'peer op/s':>10} {'p99 ms':>8} {'ours op/s':>10} {'p99 ms':>8} "
          f"{'op/s ratio':>10} {'p99 ratio':>9}")
    for row in res["summary"]:
        p, o = row.get("peer", {}), row.get("ours", {})
        print(f"{row['scenario']:>8} {row['concurrency']:>3} {_f(p.get('ops_per_s')):>10} "
              f"{_f(p.get('p99_ms'), '{:.2f}'):>8} {_f(o.get('ops_per_s')):>10} {_f(o.get('p99_ms'), '{:.2f}'):>8} "
              f"{_f(row.get('ratio_ops'), '{:.2f}'):>10} {_f(row.get('ratio_p99'), '{:.2f}'):>9}")
    print()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--canned-server":
        canned_server(int(sys.argv[2]))
    else:
        sys.path.insert(0, str(BENCH_DIR))
        import run as _run
        sys.exit(_run.main(["--only", "codeflow", *sys.argv[1:]]))
