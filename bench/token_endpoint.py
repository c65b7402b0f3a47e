"""Token-endpoint benchmark: CBST's IdP side by side with node-oidc-provider.

Both servers are started on loopback, kept running for the whole run, and measured with
wrk (POST /token, client_credentials, HTTP Basic client auth) at each concurrency; within a
concurrency the servers alternate round by round (peer, ours / ours, peer / ...) so drift
on this shared machine hits both. Every measured run is preceded by a short warm-up run.
The reported figure per point is the median over rounds; runs that saw any non-200
response or socket error are flagged.

Servers are described by `Target` (see `peer_target`, `ours_target`, `stub_target`): the
argv and environment to start them (with {port}, {tmpdir}, {workers}, {venv}, {bench},
{python} placeholders), setup commands run before the start (one may print JSON with
client_id/client_secret), the readiness URL(s), and the token request. Adapting the
benchmark to a change in `idp serve` means editing `ours_target` only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from _common import (BENCH_DIR, REPO_DIR, RESULTS_DIR, ensure_python_packages, git_info,
                     machine_info, now_iso, run_text)

AUDIENCE = "https://mcp.example.test/mcp"
SCOPE = "tools/call:*"
OURS_CAPABILITIES = "tools/call:* resources/read:file:///docs/**"
PEER_DIR = BENCH_DIR / "peer"
WRK_SCRIPT = BENCH_DIR / "wrk" / "token.lua"


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Target description
# --------------------------------------------------------------------------------------

@dataclass
class Target:
    """How to set up, start, probe and query one server under test."""

    key: str                                   # "peer" or "ours" (column in the results)
    label: str                                 # human-readable, goes into tables and chart
    start: list[str]                           # argv, templated
    env: dict[str, str] = field(default_factory=dict)   # added to os.environ, templated
    cwd: str | None = None                     # templated
    setup: list[list[str]] = field(default_factory=list)  # run in order before start
    client_id: str | None = None               # static credentials (else from setup JSON)
    client_secret: str | None = None
    ready_paths: tuple[str, ...] = ("/.well-known/oauth-authorization-server",
                                    "/.well-known/openid-configuration")
    token_path: str = "/token"
    token_form: dict[str, str] = field(default_factory=lambda: {
        "grant_type": "client_credentials", "scope": SCOPE, "resource": AUDIENCE})
    audience: str = AUDIENCE
    workers: int = 2
    prepare: Callable[[], None] | None = None  # one-off install step (e.g. npm ci)
    versions: Callable[[], dict] | None = None
    is_stub: bool = False
    ready_timeout: float = 60.0


def peer_target(workers: int) -> Target:
    def prepare() -> None:
        if not shutil.which("node") or not shutil.which("npm"):
            raise RuntimeError("node and npm are needed for the peer (oidc-provider)")
        if not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            log("npm ci in bench/peer (node_modules missing)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True)

    def versions() -> dict:
        v = {"node": run_text(["node", "--version"]), "npm": run_text(["npm", "--version"])}
        try:
            pkg = json.loads((PEER_DIR / "node_modules" / "oidc-provider" /
                              "package.json").read_text())
            v["oidc-provider"] = pkg.get("version")
        except OSError:
            v["oidc-provider"] = None
        return v

    return Target(
        key="peer",
        label=f"oidc-provider (Node cluster, {workers} workers)",
        start=["node", "server.js", "{port}", "{workers}"],
        env={"NODE_ENV": "production", "PEER_HOST": "127.0.0.1",
             "PEER_CLIENT_ID": "bench", "PEER_CLIENT_SECRET": "bench-secret-0123456789abcdef",
             "PEER_AUDIENCE": AUDIENCE, "PEER_SCOPE": SCOPE},
        cwd=str(PEER_DIR),
        client_id="bench",
        client_secret="bench-secret-0123456789abcdef",
        ready_paths=("/.well-known/openid-configuration",),
        workers=workers,
        prepare=prepare,
        versions=versions,
    )


def _ours_env() -> dict[str, str]:
    return {
        "IDP_ISSUER": "http://127.0.0.1:{port}",
        "IDP_DATABASE_URL": "sqlite:///{tmpdir}/idp.db",
        "IDP_KEYS_DIR": "{tmpdir}/keys",
        "IDP_KEYSTORE_PASSPHRASE": "bench-passphrase",
        "IDP_LOG_LEVEL": "warning",
        # One load generator on one address stands for many clients (as a reverse proxy would):
        # the per-address connection cap (docs/operations.md) would refuse c=64 on one worker.
        "IDP_CLIENT_CONNECTIONS": "0",
    }


def _python_versions(python: str, dists: list[str]) -> dict:
    code = ("import sys, json, importlib.metadata as m\n"
            "out = {'python': sys.version.split()[0]}\n"
            f"for d in {dists!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))")
    txt = run_text([python, "-c", code])
    return json.loads(txt) if txt else {}


def ours_target(venv: Path, workers: int) -> Target:
    """CBST's IdP: `idp clients add ... --json`, then `idp serve`."""
    idp = str(venv / "bin" / "idp")
    return Target(
        key="ours",
        label=f"CBST idp (uvicorn, {workers} workers)",
        start=[idp, "serve", "--host", "127.0.0.1", "--port", "{port}",
               "--workers", "{workers}"],
        env=_ours_env(),
        cwd="{tmpdir}",
        setup=[[idp, "clients", "add", "bench", "--capabilities", OURS_CAPABILITIES,
                "--audience", AUDIENCE, "--json"]],
        workers=workers,
        versions=lambda: _python_versions(
            str(venv / "bin" / "python"),
            ["cbst", "fastapi", "starlette", "uvicorn", "uvloop", "httptools",
             "cryptography", "sqlmodel", "sqlalchemy", "pydantic"]),
    )


def stub_target(workers: int) -> Target:
    """Same shape as `ours_target`, with bench/stub_idp.py standing in for `idp`."""
    stub = [sys.executable, str(BENCH_DIR / "stub_idp.py")]
    return Target(
        key="ours",
        label=f"STUB stand-in (stdlib http.server, {workers} procs) - NOT CBST",
        start=[*stub, "serve", "--host", "127.0.0.1", "--port", "{port}",
               "--workers", "{workers}"],
        env=_ours_env(),
        cwd="{tmpdir}",
        setup=[[*stub, "clients", "add", "bench", "--capabilities", OURS_CAPABILITIES,
                "--audience", AUDIENCE, "--json"]],
        workers=workers,
        versions=lambda: _python_versions(sys.executable, ["cryptography"]),
        is_stub=True,
    )


def idp_usable(venv: Path) -> tuple[bool, str]:
    idp = venv / "bin" / "idp"
    if not idp.exists():
        return False, f"{idp} does not exist"
    try:
        out = subprocess.run([str(idp), "serve", "--help"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"`idp serve --help` failed to run: {e}"
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return False, f"`idp serve --help` exited {out.returncode}: {' | '.join(tail)}"
    if "--workers" not in out.stdout:
        return True, "`idp serve --help` does not mention --workers (trying anyway)"
    return True, "ok"


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _machine_busy_ticks() -> int:
    """Non-idle CPU ticks of the whole machine, all cores (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return user + nice + system + irq + softirq + steal


def wait_quiet(max_wait: float, cores: float) -> tuple[float, float]:
    """Wait (at most max_wait s) until the whole machine uses < `cores` cores over 0.5 s.

    Called while the servers under test are idle, so whatever is busy is someone else.
    Returns (seconds waited, last measured busy cores)."""
    tck = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    while True:
        b0 = _machine_busy_ticks()
        time.sleep(0.5)
        busy = (_machine_busy_ticks() - b0) / tck / 0.5
        waited = time.monotonic() - t0
        if busy < cores or waited >= max_wait:
            return waited, busy


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _group_cpu_ticks(pgid: int) -> int:
    """utime+stime (clock ticks) of the live processes in process group `pgid`."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if int(rest[2]) == pgid:
            total += int(rest[11]) + int(rest[12])
    return total


class Server:
    """A started target: its own process group, log files, port and credentials."""

    def __init__(self, target: Target, tmpdir: Path):
        self.t = target
        self.tmpdir = tmpdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.client_id = target.client_id
        self.client_secret = target.client_secret
        self.log_path = tmpdir / f"{target.key}.log"
        self.argv: list[str] = []
        self.env_shown: dict[str, str] = {}
        self.preflight: dict = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _fmt(self, s: str) -> str:
        return s.format(port=self.port, tmpdir=self.tmpdir, workers=self.t.workers,
                        bench=BENCH_DIR, python=sys.executable)

    def _env(self) -> dict[str, str]:
        extra = {k: self._fmt(v) for k, v in self.t.env.items()}
        self.env_shown = extra
        env = dict(os.environ)
        env.update(extra)
        return env

    def start(self) -> None:
        env = self._env()
        cwd = self._fmt(self.t.cwd) if self.t.cwd else None
        for cmd in self.t.setup:
            argv = [self._fmt(a) for a in cmd]
            log(f"{self.t.key}: setup: {' '.join(argv)}")
            out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                                 timeout=120)
            if out.returncode != 0:
                raise RuntimeError(f"{self.t.key}: setup command failed ({out.returncode}):"
                                   f"\n{out.stdout}\n{out.stderr}")
            creds = _find_json_with(out.stdout, ("client_id", "client_secret"))
            if creds:
                self.client_id, self.client_secret = creds["client_id"], creds["client_secret"]
        if not (self.client_id and self.client_secret):
            raise RuntimeError(f"{self.t.key}: no client credentials (setup printed no JSON "
                               f"with client_id and client_secret)")
        self.argv = [self._fmt(a) for a in self.t.start]
        log(f"{self.t.key}: start: {' '.join(self.argv)}  (log {self.log_path})")
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            logf.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.t.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.t.key}: server exited with {self.proc.returncode}"
                                   f" before it was ready; log tail:\n{self.log_tail()}")
            for path in self.t.ready_paths:
                try:
                    with urllib.request.urlopen(self.base_url + path, timeout=2) as r:
                        if r.status == 200:
                            json.loads(r.read())
                            log(f"{self.t.key}: ready ({path}) on {self.base_url}")
                            return
                except Exception as e:  # noqa: BLE001 - keep polling
                    last = f"{path}: {e}"
            time.sleep(0.1)
        raise RuntimeError(f"{self.t.key}: not ready after {self.t.ready_timeout}s ({last});"
                           f" log tail:\n{self.log_tail()}")

    def ensure_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.t.key}: server exited with {self.proc.returncode} during "
                               f"the run; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        for sig, wait in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # stragglers of the group (workers that outlived their parent)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        log(f"{self.t.key}: stopped")

    def cpu_ticks(self) -> int:
        return _group_cpu_ticks(self.proc.pid) if self.proc else 0

    # -- the request ------------------------------------------------------------------

    def auth_header(self) -> str:
        # RFC 6749 2.3.1: client_id and secret are form-urlencoded before Basic encoding.
        user = urllib.parse.quote_plus(self.client_id)
        pw = urllib.parse.quote_plus(self.client_secret)
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    def form_body(self) -> str:
        return urllib.parse.urlencode(self.t.token_form)

    def check_token(self) -> dict:
        """One real token request; fails loudly unless it yields a JWT access token."""
        req = urllib.request.Request(
            self.base_url + self.t.token_path, data=self.form_body().encode(), method="POST",
            headers={"Authorization": self.auth_header(),
                     "Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.t.key}: POST {self.t.token_path} -> {e.code}: "
                               f"{e.read()[:500]!r}") from None
        data = json.loads(body)
        tok = data.get("access_token")
        if status != 200 or not isinstance(tok, str) or tok.count(".") != 2:
            raise RuntimeError(f"{self.t.key}: no JWT access token in {body[:500]!r}")
        header = json.loads(_b64d(tok.split(".")[0]))
        claims = json.loads(_b64d(tok.split(".")[1]))
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        info = {"status": status, "token_type": data.get("token_type"),
                "expires_in": data.get("expires_in"), "jwt_header": header,
                "claims": sorted(claims), "aud": aud, "scope": claims.get("scope"),
                "token_bytes": len(tok), "response_bytes": len(body),
                "aud_ok": self.t.audience in auds}
        if not info["aud_ok"]:
            log(f"WARNING {self.t.key}: token aud {aud!r} does not contain {self.t.audience}")
        log(f"{self.t.key}: token ok: alg={header.get('alg')} typ={header.get('typ')} "
            f"aud={aud} scope={claims.get('scope')!r} {len(tok)} bytes")
        self.preflight = info
        return info


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _find_json_with(text: str, keys: tuple[str, ...]) -> dict | None:
    candidates = [text.strip()] + [ln.strip() for ln in text.splitlines()[::-1]]
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start:text.rfind("}") + 1])
    for c in candidates:
        if not c.startswith("{"):
            continue
        try:
            obj = json.loads(c)
        except ValueError:
            continue
        if isinstance(obj, dict) and all(k in obj for k in keys):
            return obj
    return None


# --------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------

def ensure_wrk(allow_install: bool) -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if not allow_install:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    log("installing wrk (apt-get install -y wrk)")
    if subprocess.run([*prefix, "apt-get", "install", "-y", "wrk"], env=env).returncode != 0:
        log("apt-get install failed; running apt-get update and retrying")
        subprocess.run([*prefix, "apt-get", "update"], env=env, check=False)
        subprocess.run([*prefix, "apt-get", "install", "-y", "wrk"], env=env, check=True)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk still not found after apt-get install")
    return path


def wrk_version() -> str | None:
    v = run_text(["dpkg-query", "-W", "-f=${Version}", "wrk"])
    try:
        first = subprocess.run(["wrk", "-v"], capture_output=True, text=True,
                               timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        first = None
    return " / ".join(x for x in (first, f"deb {v}" if v else None) if x) or None


def run_wrk(wrk: str, server: Server, concurrency: int, seconds: float, tmpdir: Path) -> dict:
    server.ensure_alive()
    threads = min(concurrency, 2)
    result_file = tmpdir / f"wrk-{server.t.key}-{concurrency}-{time.monotonic_ns()}.json"
    env = dict(os.environ, BENCH_TOKEN_PATH=server.t.token_path,
               BENCH_AUTH=server.auth_header(), BENCH_BODY=server.form_body(),
               BENCH_RESULT_FILE=str(result_file))
    dur = max(1, round(seconds))
    argv = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{dur}s", "--timeout", "10s",
            "--latency", "-s", str(WRK_SCRIPT), server.base_url]
    cpu0, busy0, kids0 = server.cpu_ticks(), _machine_busy_ticks(), _children_cpu_s()
    load0 = os.getloadavg()[0]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=dur + 60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    cpu1, busy1, kids1 = server.cpu_ticks(), _machine_busy_ticks(), _children_cpu_s()
    if proc.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    raw = json.loads(result_file.read_text())
    result_file.unlink()
    secs = raw["duration_us"] / 1e6
    e = raw["errors"]
    sock_errors = e["connect"] + e["read"] + e["write"] + e["timeout"]
    tck = os.sysconf("SC_CLK_TCK")
    cpu_s = (cpu1 - cpu0) / tck
    wrk_cpu_s = kids1 - kids0
    # CPU the machine spent on anything but this server and this wrk (other engineers'
    # tests, builds, ...): a run with much of it was disturbed.
    other_cpu_s = max(0.0, (busy1 - busy0) / tck - cpu_s - wrk_cpu_s)
    return {
        "threads": threads, "connections": concurrency, "seconds": secs,
        "requests": raw["requests"], "ok": raw["ok"], "not_ok": raw["not_ok"],
        "other_statuses": raw["other_statuses"], "socket_errors": sock_errors,
        "rps": raw["ok"] / secs if secs else 0.0,
        "rps_all": raw["requests"] / secs if secs else 0.0,
        "p50_ms": raw["latency_us"]["p50"] / 1000, "p99_ms": raw["latency_us"]["p99"] / 1000,
        "p90_ms": raw["latency_us"]["p90"] / 1000, "mean_ms": raw["latency_us"]["mean"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_req": (cpu_s * 1e6 / raw["requests"]) if raw["requests"] else None,
        "server_cores": cpu_s / secs if secs else None,
        "wrk_cores": wrk_cpu_s / secs if secs else None,
        "other_cores": other_cpu_s / secs if secs else None,
        "loadavg1_before": load0,
        "valid": raw["not_ok"] == 0 and sock_errors == 0 and raw["ok"] > 0,
        "wrk_stdout": out,
    }


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------

@dataclass
class Config:
    duration: float = 10.0
    warmup: float = 2.0
    concurrencies: tuple[int, ...] = (1, 8, 64)
    rounds: int = 3
    workers: int = 2
    ours: str = "auto"          # auto | idp | stub | none
    venv: Path = REPO_DIR / ".venv"
    allow_install: bool = True
    out_dir: Path = RESULTS_DIR
    quick: bool = False
    quiet_wait: float = 20.0    # max seconds to wait for the machine to go quiet before a run
    quiet_cores: float = 0.15   # "quiet" = less than this many cores busy (servers idle)
    disturbed_cores: float = 0.2  # a run with more other load than this is redone once
    redo_disturbed: int = 1
    tmp_dir: str | None = None  # parent of the run's temp dir (ours' SQLite db and keys)


def choose_targets(cfg: Config) -> tuple[list[Target], list[str]]:
    notes: list[str] = []
    targets = [peer_target(cfg.workers)]
    mode = cfg.ours
    if mode in ("auto", "idp"):
        ok, why = idp_usable(cfg.venv)
        if ok:
            if why != "ok":
                notes.append(why)
            mode = "idp"
        elif cfg.ours == "idp":
            raise RuntimeError(f"--ours idp: {why}")
        else:
            log(f"`idp serve` not usable ({why}); using the STUB stand-in for 'ours'")
            notes.append(f"`idp serve` was not usable ({why}): the 'ours' column is the "
                         f"stdlib stub, NOT CBST.")
            mode = "stub"
    if mode == "idp":
        targets.append(ours_target(cfg.venv, cfg.workers))
    elif mode == "stub":
        if cfg.ours == "stub":
            notes.append("'ours' is the stdlib stub (bench/stub_idp.py), NOT CBST.")
        targets.append(stub_target(cfg.workers))
    return targets, notes


def run(cfg: Config) -> dict:
    wrk = ensure_wrk(cfg.allow_install)
    targets, notes = choose_targets(cfg)
    for t in targets:
        if t.prepare:
            t.prepare()
    started = now_iso()
    runs: list[dict] = []
    servers: dict[str, Server] = {}
    tmp_root = Path(tempfile.mkdtemp(prefix="cbst-bench-", dir=cfg.tmp_dir))
    keep_tmp = False
    try:
        for t in targets:
            tdir = tmp_root / t.key
            tdir.mkdir()
            s = Server(t, tdir)
            servers[t.key] = s   # registered before start so a failed start is stopped too
            s.start()
            s.check_token()
        order = [s for s in servers.values()]
        total = len(cfg.concurrencies) * cfg.rounds * len(order)
        n = 0
        for c in cfg.concurrencies:
            for r in range(cfg.rounds):
                seq = order if r % 2 == 0 else order[::-1]
                for s in seq:
                    n += 1
                    attempts = []
                    for _attempt in range(1 + max(0, cfg.redo_disturbed)):
                        waited, busy = (wait_quiet(cfg.quiet_wait, cfg.quiet_cores)
                                        if cfg.quiet_wait > 0 else (0.0, None))
                        if cfg.warmup > 0:
                            run_wrk(wrk, s, c, cfg.warmup, tmp_root)
                        res = run_wrk(wrk, s, c, cfg.duration, tmp_root)
                        if waited >= 1:
                            log(f"waited {waited:.0f} s for the machine to go quiet (busy "
                                f"{busy:.2f} cores{'; going ahead' if busy >= cfg.quiet_cores else ''})")
                        res.update(target=s.t.key, concurrency=c, round=r,
                                   quiet_waited_s=waited, busy_cores_before=busy)
                        attempts.append(res)
                        if (res["other_cores"] or 0) <= cfg.disturbed_cores:
                            break
                        log(f"{s.t.key} c={c} round {r}: disturbed (other load "
                            f"{res['other_cores']:.2f} cores)"
                            + ("; redoing" if len(attempts) <= cfg.redo_disturbed else ""))
                    res = min(attempts, key=lambda a: a["other_cores"] or 0)
                    res["attempts"] = len(attempts)
                    runs.append(res)
                    flag = "" if res["valid"] else (
                        f"  INVALID: non-200={res['not_ok']} {res['other_statuses']} "
                        f"socket_errors={res['socket_errors']}")
                    log(f"[{n}/{total}] {s.t.key:4s} c={c:<3d} round {r}: "
                        f"{res['rps']:8.0f} req/s  p50 {res['p50_ms']:6.2f} ms  "
                        f"p99 {res['p99_ms']:6.2f} ms  cpu {res['server_cpu_us_per_req'] or 0:5.0f}"
                        f" us/req  other load {res['other_cores']:.2f} cores{flag}")
        for s in servers.values():
            if s.proc and s.proc.poll() is not None:
                notes.append(f"{s.t.key} exited during the run (code {s.proc.returncode})")
    except Exception:
        keep_tmp = True
        raise
    finally:
        for s in servers.values():
            s.stop()
        if keep_tmp:
            log(f"kept {tmp_root} (server logs) for inspection")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)

    versions = {"wrk": wrk_version()}
    for t in targets:
        if t.versions:
            versions[t.key] = t.versions()
    result = {
        "benchmark": "token_endpoint",
        "started": started,
        "finished": now_iso(),
        "config": {"duration_s": cfg.duration, "warmup_s": cfg.warmup,
                   "concurrencies": list(cfg.concurrencies), "rounds": cfg.rounds,
                   "server_workers": cfg.workers, "wrk_threads": "min(c, 2)",
                   "quick": cfg.quick, "ours_mode": _ours_mode(targets),
                   "quiet_wait_s": cfg.quiet_wait, "quiet_cores": cfg.quiet_cores,
                   "disturbed_cores": cfg.disturbed_cores, "redo_disturbed": cfg.redo_disturbed,
                   "tmp_dir": str(tmp_root.parent),
                   "request": {"method": "POST", "path": "/token",
                               "form": targets[0].token_form, "client_auth": "client_secret_basic"}},
        "machine": machine_info(),
        "git": git_info(),
        "versions": versions,
        "targets": {k: {"label": s.t.label, "argv": s.argv, "env": s.env_shown,
                        "setup": [[s._fmt(a) for a in c] for c in s.t.setup],
                        "stub": s.t.is_stub, "token": s.preflight}
                    for k, s in servers.items()},
        "notes": notes,
        "runs": [{k: v for k, v in r.items() if k != "wrk_stdout"} for r in runs],
        "summary": summarize(runs, cfg.concurrencies),
    }
    write_outputs(result, cfg.out_dir, cfg.allow_install)
    return result


def _ours_mode(targets: list[Target]) -> str:
    ours = [t for t in targets if t.key == "ours"]
    if not ours:
        return "none"
    return "stub" if ours[0].is_stub else "idp"


def summarize(runs: list[dict], concurrencies) -> list[dict]:
    out = []
    for c in concurrencies:
        row: dict = {"concurrency": c}
        for key in ("peer", "ours"):
            rs = [r for r in runs if r["target"] == key and r["concurrency"] == c]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs if r[k] is not None)  # noqa
            row[key] = {
                "rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
                "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
                "server_cpu_us_per_req": med("server_cpu_us_per_req"),
                "other_cores": med("other_cores"), "other_cores_max": max(r["other_cores"] for r in rs),
                "rounds": len(rs), "invalid_rounds": sum(not r["valid"] for r in rs),
            }
        if "peer" in row and "ours" in row:
            row["ratio_rps"] = row["ours"]["rps"] / row["peer"]["rps"] if row["peer"]["rps"] else None
            row["ratio_p99"] = (row["ours"]["p99_ms"] / row["peer"]["p99_ms"]
                                if row["peer"]["p99_ms"] else None)
        out.append(row)
    return out


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def _f(x, fmt="{:.0f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def render_markdown(res: dict) -> str:
    cfg, m, v = res["config"], res["machine"], res["versions"]
    tg = res["targets"]
    peer_v, ours_v = v.get("peer", {}), v.get("ours", {})
    lines = ["# Token endpoint: CBST IdP vs node-oidc-provider", ""]
    if cfg["quick"]:
        lines += ["> **Quick smoke run** (short durations, one round): not for quoting.", ""]
    if tg.get("ours", {}).get("stub"):
        lines += ["> **'ours' is the stdlib stub (`bench/stub_idp.py`), NOT the CBST IdP.** "
                  "These numbers only show that the harness works.", ""]
    lines += [
        f"POST /token, `grant_type=client_credentials`, scope `{SCOPE}`, resource "
        f"`{AUDIENCE}`, client_secret_basic; JWT access tokens. wrk, "
        f"{cfg['duration_s']:g} s per run after a {cfg['warmup_s']:g} s warm-up, wrk threads = "
        f"min(c, 2), keep-alive; median of {cfg['rounds']} interleaved round(s) per point. "
        f"Loopback; load generator and servers share the machine's {m.get('nproc')} cores. "
        f"Temp dir (ours' SQLite database): `{cfg.get('tmp_dir')}`.",
        "",
        "| c | peer req/s | peer p50 ms | peer p99 ms | ours req/s | ours p50 ms | ours p99 ms "
        "| ours/peer req/s | ours/peer p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in res["summary"]:
        p, o = row.get("peer", {}), row.get("ours", {})
        lines.append(
            f"| {row['concurrency']} | {_f(p.get('rps'))} | {_f(p.get('p50_ms'), '{:.2f}')} "
            f"| {_f(p.get('p99_ms'), '{:.2f}')} | {_f(o.get('rps'))} "
            f"| {_f(o.get('p50_ms'), '{:.2f}')} | {_f(o.get('p99_ms'), '{:.2f}')} "
            f"| {_f(row.get('ratio_rps'), '{:.2f}×')} | {_f(row.get('ratio_p99'), '{:.2f}×')} |")
    lines += ["", "Throughput counts only 200 responses. ours/peer req/s > 1 means ours is "
              "faster; ours/peer p99 < 1 means ours has the lower tail latency.", "",
              "Server CPU per request (all processes of the server, from /proc), and the "
              "spread of req/s over rounds:", "",
              "| c | peer CPU µs/req | ours CPU µs/req | peer req/s min–max | ours req/s min–max "
              "| other load, cores (max) |",
              "|---:|---:|---:|---:|---:|---:|"]
    for row in res["summary"]:
        p, o = row.get("peer", {}), row.get("ours", {})
        lines.append(
            f"| {row['concurrency']} | {_f(p.get('server_cpu_us_per_req'))} "
            f"| {_f(o.get('server_cpu_us_per_req'))} "
            f"| {_f(p.get('rps_min'))}–{_f(p.get('rps_max'))} "
            f"| {_f(o.get('rps_min'))}–{_f(o.get('rps_max'))} "
            f"| {_f(max(x.get('other_cores_max', 0) for x in (p, o) if x), '{:.2f}')} |")
    lines += ["", "*Other load* is CPU the machine spent outside the servers under test and wrk "
              "during a measured run (from /proc/stat), in cores; with 2 cores, anything above "
              "~0.2 means someone else was using the machine and the run was disturbed. Before each run the "
              "bench waits (up to {:g} s) for the machine to go quiet, and redoes a disturbed "
              "run {} time(s), keeping the least disturbed attempt.".format(
                  cfg["quiet_wait_s"], cfg["redo_disturbed"])]
    noisy = [r for r in res["runs"] if (r.get("other_cores") or 0) > cfg["disturbed_cores"]]
    if noisy:
        lines += ["", f"**{len(noisy)} of {len(res['runs'])} measured runs were disturbed** by "
                  f"other load > {cfg['disturbed_cores']} cores (numbers not trustworthy): " + ", ".join(
                      f"{r['target']} c={r['concurrency']} r{r['round']} "
                      f"({r['other_cores']:.2f})" for r in noisy) + "."]
    bad = [r for r in res["runs"] if not r["valid"]]
    if bad:
        lines += ["", "**Invalid runs** (non-200 responses or socket errors; included in the "
                  "medians above):", ""]
        for r in bad:
            lines.append(f"- {r['target']} c={r['concurrency']} round {r['round']}: "
                         f"{r['not_ok']} non-200 {r['other_statuses']}, "
                         f"{r['socket_errors']} socket errors")
    lines += ["", "## Servers", ""]
    for k, t in tg.items():
        tok = t.get("token", {})
        lines.append(f"- **{k}**: {t['label']}: `{' '.join(t['argv'])}`; token "
                     f"alg {tok.get('jwt_header', {}).get('alg')}, "
                     f"typ {tok.get('jwt_header', {}).get('typ')}, {tok.get('token_bytes')} bytes,"
                     f" claims {', '.join(tok.get('claims', []))}")
    lines += ["", "## Versions and machine", "",
              f"- peer: node {peer_v.get('node')}, oidc-provider {peer_v.get('oidc-provider')}",
              f"- ours: " + (", ".join(f"{k} {val}" for k, val in ours_v.items()) or "n/a"),
              f"- wrk: {v.get('wrk')}",
              f"- machine: nproc {m.get('nproc')}, {m.get('cpu_model', '?')}, "
              f"{m.get('mem_total', '?')}, {m.get('os', '?')}, kernel {m.get('kernel')}",
              f"- git: {res['git']['commit']}; run {res['started']} → {res['finished']}"]
    if res["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    lines += ["", "Raw data: `token_endpoint.json`. Chart: `token_endpoint.png`. "
              "Reproduce: `.venv/bin/python bench/run.py --only token`.", ""]
    return "\n".join(lines)


def render_png(res: dict, path: Path, allow_install: bool) -> str | None:
    missing = ensure_python_packages({"matplotlib": "matplotlib>=3.8"}, allow_install, log)
    if missing:
        return "matplotlib not available: chart skipped"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["summary"]
    keys = [k for k in ("peer", "ours") if any(k in r for r in rows)]
    labels = {k: res["targets"][k]["label"] for k in keys}
    colors = {"peer": "#7f7f7f", "ours": "#1f77b4"}
    x = list(range(len(rows)))
    width = 0.8 / max(1, len(keys))
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for i, k in enumerate(keys):
        vals = [r.get(k, {}).get("rps", 0) for r in rows]
        lo = [v - r.get(k, {}).get("rps_min", v) for v, r in zip(vals, rows)]
        hi = [r.get(k, {}).get("rps_max", v) - v for v, r in zip(vals, rows)]
        pos = [xi + (i - (len(keys) - 1) / 2) * width for xi in x]
        bars = ax.bar(pos, vals, width, label=labels[k], color=colors[k],
                      yerr=[lo, hi], capsize=3)
        tops = [v + h for v, h in zip(vals, hi)]
        for b, v, top in zip(bars, vals, tops):
            ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, top),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(x, [f"c={r['concurrency']}" for r in rows])
    ax.set_ylabel("requests/s (median of rounds)")
    title = (f"POST /token client_credentials (JWT access token) — {res['machine'].get('nproc')}"
             f" cores, wrk; whiskers: min–max over {res['config']['rounds']} round(s)")
    if res["targets"].get("ours", {}).get("stub"):
        title += "\n'ours' = STUB, not CBST"
    disturbed = sum((r.get("other_cores") or 0) > res["config"]["disturbed_cores"]
                    for r in res["runs"])
    if disturbed:
        title += (f"\nWARNING: {disturbed} of {len(res['runs'])} runs disturbed by other load "
                  "on the machine (see .md)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def write_outputs(res: dict, out_dir: Path, allow_install: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "token_endpoint.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "token_endpoint.md").write_text(render_markdown(res))
    err = render_png(res, out_dir / "token_endpoint.png", allow_install)
    if err:
        log(err)
    log(f"wrote {out_dir}/token_endpoint.{{md,json,png}}")
