"""Real-browser plumbing for the tests of the IdP's pages (and the screenshot script).

The system Chromium (Debian ``chromium``) driven by Playwright: nothing is downloaded at run time.
Around it, real servers on loopback: ``idp serve`` with a local user, a registered resource with a
catalogue and a public client; the client's loopback redirect URI (a tiny HTTP server that records
what reaches it); and a page of *another site* (``localhost`` instead of ``127.0.0.1``, so the
browser treats it as cross-site, as it would an attacker's) that frames or posts to the IdP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from idp_testing import env_for, free_port, random_kek, run_cli

from idp.config import Settings

# Never fetch a browser: the system one is used (and a stray `playwright install` is a no-op).
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = os.environ.get("CBST_TEST_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: the test machine runs as root, where Chromium's sandbox refuses to start.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

USERNAME = "alice"
PASSWORD = "correct horse battery staple"
RESOURCE = "http://127.0.0.1:9/mcp"  # registered, never contacted: consent reads its catalogue
RESOURCE_NAME = "Docs server"
DESTRUCTIVE_TOOL = "delete-file"
READONLY_TOOL = "read-file"
CATALOGUE: dict[str, Any] = {
    "tools": [
        {"name": READONLY_TOOL, "title": "Read a file", "description": "Returns the contents of one document.",
         "annotations": {"readOnlyHint": True}},
        {"name": DESTRUCTIVE_TOOL, "title": "Delete a file", "description": "Removes a document for good.",
         "annotations": {"destructiveHint": True}},
        {"name": "search", "title": "Search the documents", "description": "Full-text search.",
         "annotations": {"readOnlyHint": True}},
    ],
    "resources": [{"uri": "file:///docs/readme.md", "name": "readme", "title": "The README"}],
    "prompts": [{"name": "summarize", "title": "Summarize", "description": "Summarises a document."}],
}


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


# --------------------------------------------------------------------------------------------
# Small loopback HTTP servers
# --------------------------------------------------------------------------------------------


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; ``stop()`` ends it."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


class Callback(_Server):
    """The public client's loopback redirect URI (RFC 8252 §7.3): records each query it gets."""

    def __init__(self) -> None:
        self.hits: list[dict[str, str]] = []
        self.arrived = threading.Event()
        hits, arrived = self.hits, self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/callback":
                    hits.append({k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()})
                    arrived.set()
                body = b"<!doctype html><title>Client</title><p>You may close this window.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.redirect_uri = f"http://127.0.0.1:{self.port}/callback"

    def clear(self) -> None:
        self.hits.clear()
        self.arrived.clear()


class OtherSite(_Server):
    """Pages of another site: served as ``http://localhost:PORT`` while the IdP is
    ``http://127.0.0.1:PORT`` — a different host, so cross-site for cookies and framing."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, dict[str, str]]] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, headers = pages.get(urlsplit(self.path).path, (None, {}))
                data = (body or "not found").encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.origin = f"http://localhost:{self.port}"

    def put(self, path: str, body: str, headers: dict[str, str] | None = None) -> str:
        self.pages[path] = (body, headers or {})
        return self.origin + path

    def frame(self, path: str, src: str) -> str:
        return self.put(path, f'<!doctype html><title>Framing</title><iframe id="victim" name="victim" '
                              f'src="{html.escape(src)}" width="800" height="600"></iframe>')

    def auto_post(self, path: str, action: str, fields: dict[str, str]) -> str:
        """A page that posts a form to ``action`` as soon as it loads (a classic CSRF page)."""
        inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in fields.items())
        return self.put(path, f'<!doctype html><title>Win a prize</title><form id="f" method="post" '
                              f'action="{html.escape(action)}">{inputs}</form>'
                              "<script>document.getElementById('f').submit()</script>")


# --------------------------------------------------------------------------------------------
# The IdP
# --------------------------------------------------------------------------------------------


class IdPServer:
    """The IdP's ASGI app (``idp.app.create_app``, what ``idp serve`` runs) under uvicorn on a
    loopback port, in a thread of the test process.

    Not a subprocess: on the shared 2-core test machine a fresh interpreter importing the IdP
    took 12 s to answer (against ~1 s here), and a real HTTP server is what the browser needs."""

    def __init__(self, settings: Settings, port: int) -> None:
        import time

        import uvicorn

        from idp.app import create_app

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(settings, maintenance=False), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"idp-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the IdP did not start (see the captured log)")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@dataclass
class BrowserIdP:
    """A running ``idp serve`` with what the pages need."""

    server: IdPServer
    settings: Settings
    env: dict[str, str]
    client_id: str
    callback: Callback
    home: Path
    provider: Any  # an idp.provider.Provider on the same database, for what tests set up
    _people: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def authorize_url(self, *, scope: str, state: str | None = None, redirect_uri: str | None = None,
                      client_id: str | None = None, resource: str = RESOURCE,
                      **more: str) -> tuple[str, dict[str, str]]:
        """A PKCE (S256) authorization request; returns the URL and the client's secrets
        (state, verifier) to check the response against."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = state or secrets.token_urlsafe(16)
        params = {"response_type": "code", "client_id": client_id or self.client_id,
                  "redirect_uri": redirect_uri or self.callback.redirect_uri, "scope": scope, "state": state,
                  "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource, **more}
        return f"{self.url}/authorize?{urlencode(params)}", {"state": state, "verifier": verifier}

    def person(self) -> str:
        """A new local account (password :data:`PASSWORD`): consent remembered for one test's
        person does not leak into another's."""
        self._people += 1
        name = f"person{self._people}"
        self.provider.users.add(name, PASSWORD)
        return name

    def cli(self, *args: str, input: str | None = None) -> Any:
        done = run_cli(*args, env=self.env, input=input)
        assert done.returncode == 0, f"idp {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done


def _seed(provider: Any, callback: Callback) -> str:
    """The local user, the resource with its catalogue, the public client; returns its client_id.

    Through the registries the CLI commands call (``idp users add``, ``idp resources add``,
    ``idp clients add --public --redirect-uri``; the README walkthrough runs those): one process
    instead of three CLI start-ups. The catalogue as the resource's catalogue pull stores it."""
    provider.users.add(USERNAME, PASSWORD)
    if provider.resources.get(RESOURCE) is None:
        provider.resources.add(RESOURCE, name=RESOURCE_NAME, actor="test")
    provider.resources.set_catalogue(RESOURCE, CATALOGUE, actor="test")
    client, _ = provider.clients.add("docs-desktop", capabilities="", audiences=[RESOURCE], auth_method="none",
                                     redirect_uris=[callback.redirect_uri])
    return str(client.client_id)


@contextlib.contextmanager
def running_idp(home: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[BrowserIdP]:
    """``idp serve`` on a free loopback port with the seeded user, resource and client."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{home / 'idp.db'}",
                        keys_dir=home / "keys", keystore_kek=random_kek(), port=port)
    env = {**env_for(settings), "IDP_PORT": str(port), **(extra_env or {})}
    callback = Callback()
    server: IdPServer | None = None
    provider: Any = None
    try:
        from idp.provider import Provider

        provider = Provider.open(settings)
        client_id = _seed(provider, callback)
        server = IdPServer(settings, port)
        yield BrowserIdP(server=server, settings=settings, env=env, client_id=client_id, callback=callback, home=home,
                         provider=provider)
    finally:
        if server is not None:
            server.stop()
        if provider is not None:
            provider.close()
        callback.stop()


# --------------------------------------------------------------------------------------------
# What the browser saw
# --------------------------------------------------------------------------------------------


@dataclass
class Watch:
    """Every request a browser context made, its console messages and CSP violation reports."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, url, resource type)
    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text)
    page_errors: list[str] = field(default_factory=list)

    def csp_messages(self) -> list[str]:
        return [text for _, text in self.console if "Content Security Policy" in text or "Refused to" in text]

    def foreign(self, *origins: str) -> list[str]:
        """Requests to any origin other than ``origins``."""
        return [f"{m} {u}" for m, u, _ in self.requests if not any(_same_origin(u, o) for o in origins)]


def _same_origin(url: str, origin: str) -> bool:
    a, b = urlsplit(url), urlsplit(origin)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


#: Collects securitypolicyviolation events in every document (init scripts bypass the page's CSP).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(
  {directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber}));
"""


def watch_context(context: Any, allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Watch:
    """Log every request of ``context`` (redirects too); abort any that would leave the machine."""
    seen = Watch()
    context.on("request", lambda req: seen.requests.append((req.method, req.url, req.resource_type)))

    def route(r: Any) -> None:  # sees the first request of a redirect chain only: logging is above
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in allowed_hosts:
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    context.add_init_script(CSP_LISTENER)

    def on_page(page: Any) -> None:
        page.on("console", lambda m: seen.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: seen.page_errors.append(str(e)))

    context.on("page", on_page)
    return seen


#: Contrast of an element's text against what lies behind it (WCAG 2.x relative luminance). Colours
#: go through a canvas so that every CSS colour syntax (rgb, hsl, oklch, color-mix...) becomes sRGB,
#: and translucent layers are composited the way they are painted.
CONTRAST_JS = """
(el) => {
  const cv = document.createElement('canvas'); cv.width = cv.height = 1;
  const cx = cv.getContext('2d', {willReadFrequently: true});
  const rgba = (c) => { cx.clearRect(0, 0, 1, 1); cx.fillStyle = '#000'; cx.fillStyle = c; cx.fillRect(0, 0, 1, 1);
    const d = cx.getImageData(0, 0, 1, 1).data; return [d[0], d[1], d[2], d[3] / 255]; };
  const over = (top, under) => { const a = top[3] + under[3] * (1 - top[3]); if (!a) return [0, 0, 0, 0];
    return [0, 1, 2].map(i => (top[i] * top[3] + under[i] * under[3] * (1 - top[3])) / a).concat([a]); };
  const layers = [];
  for (let n = el; n; n = n.parentElement) {
    const s = getComputedStyle(n);
    if (s.backgroundImage && s.backgroundImage !== 'none') return {error: 'background image on ' + n.tagName};
    layers.push(rgba(s.backgroundColor));
  }
  let bg = [255, 255, 255, 1];  // the canvas behind the root
  for (const l of layers.reverse()) bg = over(l, bg);
  const s = getComputedStyle(el);
  const fg = over(rgba(s.color), bg);
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const [a, b] = [lum(fg), lum(bg)];
  return {ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), fg, bg, color: s.color,
          background: layers[layers.length - 1], fontSize: s.fontSize, fontWeight: s.fontWeight};
}
"""


def contrast(locator: Any) -> dict[str, Any]:
    result: dict[str, Any] = locator.evaluate(CONTRAST_JS)
    assert "error" not in result, result
    return result


def accessible_names(page: Any) -> list[dict[str, str]]:
    """Chromium's own accessibility tree (CDP), reduced to the form controls and their names."""
    cdp = page.context.new_cdp_session(page)
    try:
        tree = cdp.send("Accessibility.getFullAXTree")
    finally:
        cdp.detach()
    roles = {"textbox", "checkbox", "radio", "button", "combobox", "listbox", "switch", "spinbutton", "link",
             "searchbox", "menuitem", "slider"}
    out = []
    for node in tree["nodes"]:
        if node.get("ignored"):
            continue
        role = (node.get("role") or {}).get("value")
        if role in roles:
            out.append({"role": role, "name": str((node.get("name") or {}).get("value") or "").strip()})
    return out


def tab_to(page: Any, predicate_js: str, *, limit: int = 30) -> int:
    """Press Tab until ``predicate_js`` (a function of document.activeElement) holds; how many presses."""
    for n in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!(el && ({predicate_js})(el)); }})()"):
            return n
    raise AssertionError(f"Tab never reached an element with {predicate_js} in {limit} presses")


def screenshots_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"


AXE_DIR = Path(__file__).resolve().parent / "npm"


def axe_source() -> str:
    """axe-core's browser build, from ``tests/browser/npm`` (pinned by its lockfile; ``npm ci`` when
    missing, as ``make test`` does)."""
    script = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if not script.is_file():
        import shutil
        import subprocess

        npm = shutil.which("npm")
        assert npm, "npm is needed for axe-core (make interop-deps installs Node.js and npm)"
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(AXE_DIR)],
                              check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return script.read_text()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Run axe-core (WCAG 2.x A and AA rules) on the page; its violations, reduced.

    Injected through the DevTools protocol (``evaluate``), which the page's CSP does not govern,
    so the page is scanned under its real policy."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source() + "\n;undefined")
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}, resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["html"][:200] for n in v["nodes"]]} for v in result["violations"]]


# --------------------------------------------------------------------------------------------
# What a person does on the pages
# --------------------------------------------------------------------------------------------


def active(page: Any) -> dict[str, str]:
    """The focused element: tag, id, type, name, value."""
    result: dict[str, str] = page.evaluate(
        "(() => { const e = document.activeElement || {}; return {tag: (e.tagName || '').toLowerCase(),"
        " id: e.id || '', type: e.type || '', name: e.name || '', value: e.value || ''}; })()")
    return result


def login(page: Any, username: str = USERNAME, password: str = PASSWORD) -> None:
    """Fill the password form by its labels and submit it."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def grant_boxes(page: Any) -> dict[str, Any]:
    """The consent page's checkboxes by the capability each grants."""
    boxes = page.locator("#consent-form input[type=checkbox][name=grant]")
    return {boxes.nth(i).get_attribute("value"): boxes.nth(i) for i in range(boxes.count())}


def exchange(idp: BrowserIdP, code: str, verifier: str, *, resource: str = RESOURCE) -> dict[str, Any]:
    """The client's token request for the code (public client: PKCE, no secret)."""
    import httpx

    r = httpx.post(f"{idp.url}/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": idp.client_id,
        "redirect_uri": idp.callback.redirect_uri, "resource": resource}, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_callback(page: Any, idp: BrowserIdP, timeout: float = 15) -> dict[str, str]:
    """What reached the client's redirect URI. Waits through Playwright (not by blocking the
    thread), so that the browser's events, route handlers included, keep being served."""
    import time

    deadline = time.monotonic() + timeout
    while not idp.callback.arrived.is_set():
        assert time.monotonic() < deadline, f"the client's redirect URI was never reached (page at {page.url})"
        page.wait_for_timeout(50)
    assert len(idp.callback.hits) == 1, idp.callback.hits
    return idp.callback.hits[0]


#: Every visible element with text of its own, and the contrast of that text (CONTRAST_JS).
TEXT_CONTRAST_JS = """
() => {
  const contrast = (__CONTRAST__);
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!own || !el.getClientRects().length || getComputedStyle(el).visibility === 'hidden') continue;
    const r = contrast(el);
    const size = parseFloat(r.fontSize), bold = parseInt(r.fontWeight) >= 700;
    // WCAG 1.4.3: large text (24px, or 18.66px bold) needs 3:1, the rest 4.5:1
    out.push({tag: el.tagName.toLowerCase(), cls: el.className, text: own.slice(0, 40), ratio: r.ratio,
              needed: (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5, color: r.color});
  }
  return out;
}
""".replace("__CONTRAST__", CONTRAST_JS.strip())


def low_contrast_text(page: Any) -> list[dict[str, Any]]:
    """Text on the page below the WCAG AA contrast ratio."""
    found: list[dict[str, Any]] = page.evaluate(TEXT_CONTRAST_JS)
    assert found, "no text found on the page"
    return [t for t in found if t["ratio"] < t["needed"]]


#: The focus indicator of the focused element: its outline (or box-shadow) and the contrast of
#: the outline's colour against what is behind the element (WCAG 1.4.11: 3:1 for UI states).
FOCUS_JS = """
() => {
  const contrast = (__CONTRAST__);
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  const probe = document.createElement('span');
  probe.style.color = s.outlineColor;
  (el.parentElement || document.body).appendChild(probe);
  const ring = contrast(probe);
  probe.remove();
  return {tag: el.tagName.toLowerCase(), id: el.id, value: el.value || '', text: (el.innerText || '').slice(0, 40),
          focusVisible: el.matches(':focus-visible'), outlineStyle: s.outlineStyle,
          outlineWidth: parseFloat(s.outlineWidth), boxShadow: s.boxShadow, ringContrast: ring.ratio};
}
""".replace("__CONTRAST__", CONTRAST_JS.strip())


def focus_ring(page: Any) -> dict[str, Any] | None:
    found: dict[str, Any] | None = page.evaluate(FOCUS_JS)
    return found


def tab_cycle(page: Any, limit: int = 40) -> list[dict[str, Any]]:
    """Tab from the top of the page through every focusable element, once; each one's focus ring."""
    page.mouse.click(1, 1)  # the top left corner (no control there): Tab starts from the top
    page.evaluate("document.activeElement && document.activeElement.blur()")
    rings: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for _ in range(limit):
        page.keyboard.press("Tab")
        ring = focus_ring(page)
        if ring is None:
            break
        key = (ring["tag"], ring["id"], ring["value"] + ring["text"])
        if key in seen:
            break
        seen.add(key)
        rings.append(ring)
    return rings
