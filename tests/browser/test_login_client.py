"""The README walkthrough's login, end to end: the official Python MCP client (``mcp`` 2.x, its
own OAuth) in examples/login_client.py, against examples/server.py, with a person logging in and
consenting in a real browser — then a tool call with the token, and a step-up for the
destructive tool with a second consent that asks for it alone."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser_support import BrowserIdP, grant_boxes, login
from idp_testing import ROOT, free_port

pytestmark = pytest.mark.slow


class Proc:
    """A subprocess whose stderr lines arrive on a queue (read by a thread, so waiting for one
    never blocks Playwright's event loop)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def next_url(self, page: Any, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get_nowait().strip()
            except queue.Empty:
                assert self.proc.poll() is None, f"client exited: {''.join(self.err)}"
                page.wait_for_timeout(100)
                continue
            if line.startswith("http"):
                return line
        raise AssertionError(f"the client never printed a login URL: {''.join(self.err)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def example_server(idp: BrowserIdP) -> Iterator[str]:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    if idp.provider.resources.get(resource) is None:
        idp.provider.resources.add(resource, name="CBST example server", actor="test")
    idp.provider.resources.set_catalogue(resource, _example_catalogue(), actor="test")
    server = Proc([sys.executable, "examples/server.py", "--issuer", idp.url, "--port", str(port)], {})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.proc.poll() is None, "".join(server.err)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp",
                             timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "".join(server.err)
            time.sleep(0.2)
        yield resource
    finally:
        server.stop()


def _example_catalogue() -> dict[str, Any]:
    """examples/server.py's own tools/list, resources/list and prompts/list (what the IdP's
    catalogue pull stores): without it every tool counts as destructive (the MCP default for a
    tool the IdP knows nothing about) and is unticked on the consent page."""
    import asyncio
    import importlib.util

    spec = importlib.util.spec_from_file_location("cbst_example_server", ROOT / "examples" / "server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mcp = module.build_mcp()

    async def lists() -> dict[str, Any]:
        dump = {"by_alias": True, "exclude_none": True, "mode": "json"}
        return {"tools": [{k: v for k, v in t.model_dump(**dump).items() if k in ("name", "title", "description",
                                                                             "annotations")}
                          for t in await mcp.list_tools()],
                "resources": [{k: v for k, v in r.model_dump(**dump).items() if k in ("uri", "name", "title",
                                                                                 "description")}
                              for r in await mcp.list_resources()],
                "prompts": [{k: v for k, v in p.model_dump(**dump).items() if k in ("name", "title", "description")}
                            for p in await mcp.list_prompts()]}

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # this thread's event loop is Playwright's
        return pool.submit(asyncio.run, lists()).result(60)



def test_official_client_logs_a_person_in_and_steps_up(page: Any, idp: BrowserIdP, example_server: str) -> None:
    port = free_port()
    client, _ = idp.provider.clients.add(f"demo-desktop-{port}", capabilities="", audiences=[example_server],
                                         auth_method="none", redirect_uris=[f"http://127.0.0.1:{port}/callback"])
    person = idp.person()
    proc = Proc([sys.executable, "examples/login_client.py", "--server", example_server, "--client-id",
                 client.client_id, "--port", str(port), "--no-browser", "--timeout", "60",
                 "--call", "delete-file", '{"path": "/docs/readme.md"}'], {})
    try:
        # First login: what the server's metadata names (echo, add, docs, summarize); no delete-file.
        page.goto(proc.next_url(page))
        login(page, person)
        page.locator("#consent-form").wait_for()
        boxes = grant_boxes(page)
        assert "tools/call:delete-file" not in boxes
        assert boxes["tools/call:echo"].is_checked() and boxes["tools/call:add"].is_checked()  # read-only
        page.get_by_role("button", name="Allow selected").click()
        page.locator("text=you may close this window").wait_for()

        # The call of delete-file is refused (403 insufficient_scope): the SDK steps up, the
        # IdP asks for the destructive tool alone, unticked; the person ticks it.
        page.goto(proc.next_url(page))
        page.locator("#consent-form").wait_for()
        boxes = grant_boxes(page)
        assert list(boxes) == ["tools/call:delete-file"] and not boxes["tools/call:delete-file"].is_checked()
        boxes["tools/call:delete-file"].check()
        page.get_by_role("button", name="Allow selected").click()
        page.locator("text=you may close this window").wait_for()

        deadline = time.monotonic() + 60
        while proc.proc.poll() is None:
            assert time.monotonic() < deadline, "".join(proc.err)
            page.wait_for_timeout(100)
        out = proc.proc.stdout.read() if proc.proc.stdout else ""
        assert proc.proc.returncode == 0, f"{out}\n{''.join(proc.err)}"
        assert "tools/list: add, echo" in out, out
        assert "tools/call delete-file: deleted /docs/readme.md" in out, out
    finally:
        proc.stop()
