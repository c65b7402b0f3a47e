#!/usr/bin/env python3
"""Per-operation cost of signing and verifying a typical access token, ES256 and EdDSA.

For each algorithm it times, on one core:
  sign side:   raw `cryptography` sign of the JWS signing input, a minimal
               json+base64+cryptography encoder, pyjwt `jwt.encode`, joserfc `jwt.encode`,
               and ours (`sdk.jws`, see the HOOK section) when it imports;
  verify side: raw `cryptography` verify, a minimal decoder (signature + exp/iss/aud
               checks), pyjwt `jwt.decode` (exp/iss/aud required), joserfc `jwt.decode` +
               `JWTClaimsRegistry` (exp/iss/aud essential), and ours.
Keys are passed to the libraries as key objects, parsed once (pyjwt given PEM strings would
re-parse the key on every call). Ratios are to the raw primitive of the same side and
algorithm. Timing: `time.perf_counter_ns` around a loop of n calls (n calibrated so one
loop takes `--target-ms`), garbage collector paused during a loop, operations interleaved
within each round, median over rounds.

Run: .venv/bin/python bench/crypto_primitives.py [--quick] [--rounds N] [--target-ms MS]
Writes bench/results/crypto.md and bench/results/crypto.json.
"""

from __future__ import annotations

import argparse
import base64
import gc
import itertools
import json
import statistics
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO_DIR, RESULTS_DIR, dist_version, ensure_python_packages,  # noqa: E402
                     git_info, machine_info, now_iso)

ISS = "https://idp.example.test"
AUD = "https://mcp.example.test/mcp"
ALGS = ("ES256", "EdDSA")


def log(msg: str) -> None:
    print(f"[crypto] {msg}", flush=True)


def typical_claims() -> dict:
    now = int(time.time())
    cid = "cl_" + uuid.uuid4().hex[:16]
    return {"iss": ISS, "sub": cid, "aud": AUD, "client_id": cid, "iat": now,
            "exp": now + 3600, "jti": uuid.uuid4().hex,
            "scope": "tools/call:* resources/read:file:///docs/**"}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Keys:
    def __init__(self, alg: str):
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        self.alg = alg
        self.kid = "bench-" + alg.lower()
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            algo = ec.ECDSA(hashes.SHA256())
            self.raw_sign = lambda data: self.private.sign(data, algo)
            self.raw_verify = lambda sig, data: self.public.verify(sig, data, algo)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.raw_sign = lambda data: self.private.sign(data)
            self.raw_verify = lambda sig, data: self.public.verify(sig, data)
        else:
            raise ValueError(alg)
        self.public = self.private.public_key()
        from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                                     encode_dss_signature)
        self.dss_decode, self.dss_encode = decode_dss_signature, encode_dss_signature
        self.private_pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        self.public_pem = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --------------------------------------------------------------------------------------
# Minimal reference path: json + base64 + cryptography (what a lean sdk/jws could cost)
# --------------------------------------------------------------------------------------

def minimal_sign(keys: Keys, claims: dict) -> str:
    header = b64u(json.dumps({"alg": keys.alg, "typ": "at+jwt", "kid": keys.kid},
                             separators=(",", ":")).encode())
    payload = b64u(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = keys.raw_sign(signing_input)
    if keys.alg == "ES256":
        r, s = keys.dss_decode(sig)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{header}.{payload}.{b64u(sig)}"


def minimal_verify(keys: Keys, token: str) -> dict:
    header_b64, payload_b64, sig_b64 = token.split(".")
    header = json.loads(b64u_dec(header_b64))
    if header.get("alg") != keys.alg:
        raise ValueError("alg")
    sig = b64u_dec(sig_b64)
    if keys.alg == "ES256":
        if len(sig) != 64:
            raise ValueError("sig length")
        sig = keys.dss_encode(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
    keys.raw_verify(sig, f"{header_b64}.{payload_b64}".encode("ascii"))
    return check_claims(json.loads(b64u_dec(payload_b64)))


def check_claims(claims: dict) -> dict:
    """exp/iss/aud checks, as every verifier in this benchmark does them."""
    now = time.time()
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= now:
        raise ValueError("exp")
    if claims.get("iss") != ISS:
        raise ValueError("iss")
    aud = claims.get("aud")
    if aud != AUD and not (isinstance(aud, list) and AUD in aud):
        raise ValueError("aud")
    return claims


# --------------------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------------------

def pyjwt_ops(keys: Keys):
    import jwt as pyjwt

    def sign(claims: dict) -> str:
        return pyjwt.encode(claims, keys.private, algorithm=keys.alg,
                            headers={"kid": keys.kid, "typ": "at+jwt"})

    def verify(token: str) -> dict:
        return pyjwt.decode(token, keys.public, algorithms=[keys.alg], audience=AUD,
                            issuer=ISS, options={"require": ["exp", "iss", "aud"]})
    return sign, verify


def joserfc_ops(keys: Keys):
    from joserfc import jwt as jjwt
    from joserfc.jwk import ECKey, OKPKey
    cls = ECKey if keys.alg == "ES256" else OKPKey
    priv = cls.import_key(keys.private_pem)
    pub = cls.import_key(keys.public_pem)
    registry = jjwt.JWTClaimsRegistry(iss={"essential": True, "value": ISS},
                                      aud={"essential": True, "value": AUD},
                                      exp={"essential": True})
    algorithms = [keys.alg]

    def sign(claims: dict) -> str:
        return jjwt.encode({"alg": keys.alg, "typ": "at+jwt", "kid": keys.kid}, claims, priv,
                           algorithms=algorithms)

    def verify(token: str) -> dict:
        tok = jjwt.decode(token, pub, algorithms=algorithms)
        registry.validate(tok.claims)
        return tok.claims
    return sign, verify


# ======================================================================================
# HOOK: ours (sdk.jws)
# --------------------------------------------------------------------------------------
# sdk/jws.py is CBST's own minimal JWS module. As of this writing its API is
#     sdk.jws.PrivateKey(kid, alg, cryptography_key).sign(claims, typ="at+jwt") -> str
#     sdk.jws.PublicKey(kid, alg, cryptography_key)
#     sdk.jws.verify(token, {kid: PublicKey}, typ="at+jwt") -> Verified(header, claims, key)
# and `verify` checks signature and header only ("Claims are NOT checked"), so
# `ours_verify` adds the same exp/iss/aud checks as the minimal path (`check_claims`).
# When a higher-level claims-checking verifier lands (e.g. sdk.access_token), call it in
# `ours_verify` instead. If `sdk.jws` does not import, or these names are missing or
# change, "ours" is skipped and the reason is written into the results; nothing else
# depends on it.
# ======================================================================================


def load_ours():
    """Return (module, None) or (None, reason)."""
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    try:
        from sdk import jws  # noqa: PLC0415 - optional, may not exist yet
    except Exception as e:  # noqa: BLE001
        return None, f"import sdk.jws failed: {type(e).__name__}: {e}"
    return jws, None


def ours_sign(jws, keys: Keys) -> tuple[Callable[[dict], str] | None, str]:
    """A callable claims -> compact JWS made by sdk.jws, and a description of the call."""
    try:
        priv = jws.PrivateKey(keys.kid, keys.alg, keys.private)
        call = priv.sign
        minimal_verify(keys, call(typical_claims()))  # must round-trip
    except Exception as e:  # noqa: BLE001
        return None, f"sdk.jws.PrivateKey(...).sign unusable: {type(e).__name__}: {e}"
    return call, "sdk.jws.PrivateKey(kid, alg, key).sign(claims)"


def ours_verify(jws, keys: Keys) -> tuple[Callable[[str], object] | None, str]:
    """A callable token -> claims made by sdk.jws, with exp/iss/aud checked."""
    try:
        keyset = {keys.kid: jws.PublicKey(keys.kid, keys.alg, keys.public)}
        jws_verify = jws.verify

        def call(token: str) -> dict:
            return check_claims(jws_verify(token, keyset).claims)

        good = minimal_sign(keys, typical_claims())
        call(good)
    except Exception as e:  # noqa: BLE001
        return None, f"sdk.jws.verify unusable: {type(e).__name__}: {e}"
    h, _, s = good.split(".")
    tampered = f"{h}.{b64u(json.dumps({**typical_claims(), 'sub': 'x'}).encode())}.{s}"
    try:
        call(tampered)
    except Exception:  # noqa: BLE001 - expected
        return call, "sdk.jws.verify(token, {kid: PublicKey}) + bench's exp/iss/aud checks"
    return None, "sdk.jws.verify accepted a tampered token: not measured"


# ======================================================================================
# Timing
# ======================================================================================

def _loop(fn: Callable[[], object], n: int) -> tuple[int, int]:
    """(wall ns, this thread's CPU ns) for n calls of fn."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        for _ in itertools.repeat(None, n):
            fn()
        t1 = time.perf_counter_ns()
        return t1 - t0, time.thread_time_ns() - c0
    finally:
        if gc_was:
            gc.enable()


def calibrate(fn: Callable[[], object], target_ns: int) -> int:
    n = 1
    while True:
        dt, _ = _loop(fn, n)
        if dt >= target_ns / 5 or n >= 1 << 24:
            return max(1, int(n * target_ns / max(dt, 1)))
        n *= 4


def measure(ops: dict[str, Callable[[], object]], rounds: int, target_ms: float) -> dict:
    target_ns = int(target_ms * 1e6)
    for fn in ops.values():  # warm up
        for _ in range(50):
            fn()
    ns = {name: calibrate(fn, target_ns) for name, fn in ops.items()}
    samples: dict[str, list[float]] = {name: [] for name in ops}
    cpu: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for r in range(rounds):
        k = r % len(names)  # rotate the order so no op always runs first
        for name in names[k:] + names[:k]:
            wall, cpu_ns = _loop(ops[name], ns[name])
            samples[name].append(wall / ns[name])
            cpu[name].append(cpu_ns / ns[name])
    return {name: {"ns_per_op": statistics.median(s), "min_ns": min(s), "max_ns": max(s),
                   "cpu_ns_per_op": statistics.median(cpu[name]),
                   "iterations": ns[name], "rounds": len(s)} for name, s in samples.items()}


# ======================================================================================
# Benchmark
# ======================================================================================

def bench_alg(alg: str, rounds: int, target_ms: float, libs: set[str], ours_mod) -> dict:
    keys = Keys(alg)
    claims = typical_claims()
    reference = minimal_sign(keys, claims)
    h, p, _ = reference.split(".")
    signing_input = f"{h}.{p}".encode("ascii")
    raw_sig = keys.raw_sign(signing_input)

    sign_ops: dict[str, Callable[[], object]] = {
        "raw cryptography sign": lambda: keys.raw_sign(signing_input),
        "minimal json+b64+cryptography": lambda: minimal_sign(keys, claims),
    }
    verify_ops: dict[str, Callable[[], object]] = {
        "raw cryptography verify": lambda: keys.raw_verify(raw_sig, signing_input),
        "minimal json+b64+cryptography": lambda: minimal_verify(keys, reference),
    }
    notes: list[str] = []
    tokens: dict[str, str] = {"minimal": reference}
    verifiers: dict[str, Callable[[str], object]] = {"minimal": lambda t: minimal_verify(keys, t)}
    if "pyjwt" in libs:
        s, v = pyjwt_ops(keys)
        tokens["pyjwt"] = s(claims)
        verifiers["pyjwt"] = v
        sign_ops["pyjwt encode"] = lambda: s(claims)
        verify_ops["pyjwt decode"] = lambda: v(reference)
    if "joserfc" in libs:
        s2, v2 = joserfc_ops(keys)
        tokens["joserfc"] = s2(claims)
        verifiers["joserfc"] = v2
        sign_ops["joserfc encode"] = lambda: s2(claims)
        verify_ops["joserfc decode+claims"] = lambda: v2(reference)
    ours_info: dict = {}
    if ours_mod is not None:
        osign, how_s = ours_sign(ours_mod, keys)
        over, how_v = ours_verify(ours_mod, keys)
        ours_info = {"sign": how_s, "verify": how_v}
        if osign:
            tokens["ours"] = osign(claims)
            sign_ops["ours (sdk.jws) sign"] = lambda: osign(claims)
        else:
            notes.append(f"ours sign skipped: {how_s}")
        if over:
            verifiers["ours"] = over
            verify_ops["ours (sdk.jws) verify"] = lambda: over(reference)
        else:
            notes.append(f"ours verify skipped: {how_v}")

    # Cross-check: every token made by any encoder verifies with every verifier.
    for tname, tok in tokens.items():
        for vname, ver in verifiers.items():
            try:
                ver(tok)
            except Exception as e:  # noqa: BLE001
                raise RuntimeError(f"{alg}: token from {tname} rejected by {vname}: {e!r}")

    log(f"{alg}: timing {len(sign_ops)} sign and {len(verify_ops)} verify operations")
    ops = {("sign", k): v for k, v in sign_ops.items()}
    ops.update({("verify", k): v for k, v in verify_ops.items()})
    flat = measure({f"{side}|{name}": fn for (side, name), fn in ops.items()}, rounds, target_ms)
    out: dict = {"alg": alg, "token_bytes": len(reference), "sign": {}, "verify": {},
                 "notes": notes, "ours": ours_info}
    for key, m in flat.items():
        side, name = key.split("|", 1)
        out[side][name] = m
    for side, raw_name in (("sign", "raw cryptography sign"),
                           ("verify", "raw cryptography verify")):
        raw_ns = out[side][raw_name]["ns_per_op"]
        raw_cpu = out[side][raw_name]["cpu_ns_per_op"]
        for m in out[side].values():
            m["ratio_vs_raw"] = m["ns_per_op"] / raw_ns
            m["cpu_ratio_vs_raw"] = m["cpu_ns_per_op"] / raw_cpu if raw_cpu else None
            m["ops_per_s"] = 1e9 / m["ns_per_op"]
            # wall > CPU time: the thread waited for a core, i.e. the machine was busy
            m["wall_over_cpu"] = m["ns_per_op"] / m["cpu_ns_per_op"] if m["cpu_ns_per_op"] else None
    return out


def versions() -> dict:
    v = {"python": sys.version.split()[0]}
    for d in ("cryptography", "pyjwt", "joserfc", "cbst"):
        v[d] = dist_version(d)
    try:
        from cryptography.hazmat.backends.openssl.backend import backend
        v["openssl"] = backend.openssl_version_text()
    except Exception:  # noqa: BLE001
        pass
    return v


def render_markdown(res: dict) -> str:
    m, v = res["machine"], res["versions"]
    lines = ["# Signing and verifying a typical access token", ""]
    if res["config"]["quick"]:
        lines += ["> **Quick smoke run**: short loops, few rounds; not for quoting.", ""]
    lines += [
        "Claims: iss, sub, aud, client_id, iat, exp, jti, scope; header alg, typ at+jwt, kid. "
        "Verification = signature + exp/iss/aud checks (raw verify = signature only, on a "
        "precomputed signing input). One thread; median of "
        f"{res['config']['rounds']} rounds of ~{res['config']['target_ms']:g} ms loops each; "
        "× raw = time relative to the raw `cryptography` primitive of the same side. "
        "µs/op is wall time (`perf_counter_ns`); CPU µs/op is the thread's CPU time "
        "(`thread_time_ns`), which other load on the machine inflates less.", ""]
    worst = max((mm["wall_over_cpu"] or 1) for a in res["algs"] for side in ("sign", "verify")
                for mm in a[side].values())
    if worst > 1.15:
        lines += [f"> **The machine was busy during this run**: wall time was up to {worst:.2f}× "
                  "the CPU time, so other processes took the core; absolute µs are inflated, "
                  "the × raw ratios are the figures to use.", ""]
    for a in res["algs"]:
        lines += [f"## {a['alg']} ({a['token_bytes']}-byte token)", "",
                  "| side | implementation | µs/op | ops/s | × raw | CPU µs/op | × raw (CPU) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for side in ("sign", "verify"):
            for name, mm in a[side].items():
                lines.append(f"| {side} | {name} | {mm['ns_per_op'] / 1000:.1f} "
                             f"| {mm['ops_per_s']:,.0f} | {mm['ratio_vs_raw']:.2f}× "
                             f"| {mm['cpu_ns_per_op'] / 1000:.1f} "
                             f"| {mm['cpu_ratio_vs_raw']:.2f}× |")
        if a["ours"]:
            lines += ["", f"ours: sign = {a['ours'].get('sign')}; "
                          f"verify = {a['ours'].get('verify')}"]
        for n in a["notes"]:
            lines.append(f"- {n}")
        lines.append("")
    lines += ["## Versions and machine", "",
              "- " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
              f"- machine: nproc {m.get('nproc')}, {m.get('cpu_model', '?')}, {m.get('os', '?')}",
              f"- git: {res['git']['commit']}; run {res['started']} → {res['finished']}"]
    if res["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    lines += ["", "Raw data: `crypto.json`. Reproduce: "
              "`.venv/bin/python bench/run.py --only crypto`.", ""]
    return "\n".join(lines)


def run(quick: bool = False, rounds: int | None = None, target_ms: float | None = None,
        allow_install: bool = True, out_dir: Path = RESULTS_DIR) -> dict:
    rounds = rounds or (3 if quick else 7)
    target_ms = target_ms or (30.0 if quick else 200.0)
    missing = ensure_python_packages(
        {"cryptography": "cryptography>=44", "jwt": "pyjwt>=2.9", "joserfc": "joserfc>=1.0"},
        allow_install, log)
    if "cryptography" in missing:
        raise RuntimeError("cryptography is required for the crypto benchmark")
    libs = {lib for lib, mod in (("pyjwt", "jwt"), ("joserfc", "joserfc")) if mod not in missing}
    notes = [f"{lib} not importable: skipped" for lib, mod in
             (("pyjwt", "jwt"), ("joserfc", "joserfc")) if mod in missing]
    ours_mod, why = load_ours()
    if ours_mod is None:
        log(f"ours skipped: {why}")
        notes.append(f"ours (sdk.jws) skipped: {why}")
    started = now_iso()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. deprecation notices about "EdDSA"
        algs = [bench_alg(a, rounds, target_ms, libs, ours_mod) for a in ALGS]
    res = {"benchmark": "crypto_primitives", "started": started, "finished": now_iso(),
           "config": {"rounds": rounds, "target_ms": target_ms, "quick": quick},
           "machine": machine_info(), "git": git_info(), "versions": versions(),
           "notes": notes, "algs": algs}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "crypto.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "crypto.md").write_text(render_markdown(res))
    for a in algs:
        for side in ("sign", "verify"):
            for name, mm in a[side].items():
                log(f"{a['alg']:5s} {side:6s} {name:32s} {mm['ns_per_op'] / 1000:7.1f} µs "
                    f"{mm['ratio_vs_raw']:5.2f}×")
    log(f"wrote {out_dir}/crypto.{{md,json}}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--rounds", type=int, help="rounds per operation (default 7, quick 3)")
    ap.add_argument("--target-ms", type=float, help="duration of one timed loop (default 200)")
    ap.add_argument("--no-install", action="store_true",
                    help="do not pip-install missing pyjwt/joserfc into the venv")
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    a = ap.parse_args(argv)
    run(a.quick, a.rounds, a.target_ms, not a.no_install, a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
