"""A minimal hand-written stdio MCP server (no SDK): newline-delimited JSON-RPC, for exercising
what the SDK servers make awkward — resource subscriptions, unsolicited notifications, a
server-to-client request, a slow call to cancel. Standard library only, so it starts fast.

Tools: ``touch {uri}`` (emits notifications/resources/updated), ``changed`` (emits
notifications/tools/list_changed), ``ask`` (sends the client a roots/list request and reports
the answer), ``sleep {seconds}``. Every message it receives is appended to $FAKE_MCP_LOG.

With $FAKE_MCP_GO set it also speaks 2026-07-28 (``server/discover``) and serves
``subscriptions/listen`` as a spec-conforming stream: the acknowledgement, then — once the file
$FAKE_MCP_GO exists (at most 5 s), and after $FAKE_MCP_PAUSE more seconds — one
``notifications/tools/list_changed`` (its send time, ``time.monotonic()``, written to
$FAKE_MCP_GO.sent), then the listen result.
"""

import json
import os
import sys
import threading
import time

lock = threading.Lock()
log_path = os.environ.get("FAKE_MCP_LOG")
go_path = os.environ.get("FAKE_MCP_GO")
answers: dict[str, dict] = {}
waiting: dict[str, threading.Event] = {}


def send(obj: dict) -> None:
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def result(id_, res: dict) -> None:
    send({"jsonrpc": "2.0", "id": id_, "result": res})


def text(id_, value: str) -> None:
    result(id_, {"content": [{"type": "text", "text": value}], "isError": False})


def handle(msg: dict) -> None:
    method, id_, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
    if method is None:  # a response to our request
        answers[str(id_)] = msg
        waiting.pop(str(id_), threading.Event()).set()
        return
    if method == "initialize":
        result(id_, {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                     "capabilities": {"tools": {"listChanged": True}, "resources": {"subscribe": True}},
                     "serverInfo": {"name": "fake-stdio", "version": "1"}})
    elif method == "server/discover" and go_path:
        result(id_, {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {"listChanged": True}},
                     "serverInfo": {"name": "fake-stdio", "version": "1"}})
    elif method == "subscriptions/listen" and go_path:
        threading.Thread(target=listen, args=(id_,), daemon=True).start()
    elif method in ("resources/subscribe", "resources/unsubscribe", "ping"):
        result(id_, {})
    elif method == "tools/list":
        result(id_, {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("touch", "changed", "ask", "sleep")]})
    elif method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        if name == "touch":
            send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": args["uri"]}})
            text(id_, "touched")
        elif name == "changed":
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            text(id_, "changed")
        elif name == "ask":
            def ask() -> None:
                event = threading.Event()
                waiting["srv-1"] = event
                send({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})
                event.wait(5)
                text(id_, json.dumps(answers.get("srv-1")))
            threading.Thread(target=ask, daemon=True).start()
        elif name == "sleep":
            threading.Thread(target=lambda: (time.sleep(float(args.get("seconds", 1))), text(id_, "slept")),
                             daemon=True).start()
        else:
            send({"jsonrpc": "2.0", "id": id_, "error": {"code": -32602, "message": f"unknown tool {name}"}})
    elif id_ is not None:
        send({"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": f"no method {method}"}})


def listen(id_) -> None:
    meta = {"io.modelcontextprotocol/subscriptionId": id_}
    send({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
          "params": {"notifications": {"toolsListChanged": True}, "_meta": meta}})
    deadline = time.monotonic() + 5
    while not os.path.exists(go_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(float(os.environ.get("FAKE_MCP_PAUSE", "0")))
    with open(go_path + ".sent", "w") as fh:
        fh.write(repr(time.monotonic()))
    send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"_meta": meta}})
    result(id_, {"_meta": meta})


for line in sys.stdin:
    if not line.strip():
        continue
    message = json.loads(line)
    if log_path:
        with open(log_path, "a") as fh:
            fh.write(json.dumps(message) + "\n")
    handle(message)
