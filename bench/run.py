#!/usr/bin/env python3
"""CBST benchmarks: one entry point.

    .venv/bin/python bench/run.py                 # everything (~5 min)
    .venv/bin/python bench/run.py --quick         # smoke run (~1 min)
    .venv/bin/python bench/run.py --only token    # token endpoint vs oidc-provider
    .venv/bin/python bench/run.py --only crypto   # sign/verify primitives vs pyjwt/joserfc
    .venv/bin/python bench/run.py --only codeflow # authorization code + refresh vs oidc-provider

Results go to bench/results/ (token_endpoint.{md,json,png}, crypto.{md,json}, codeflow.{md,json}).
See bench/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_DIR, RESULTS_DIR  # noqa: E402


def _raise_exit(signum, _frame):
    # Turn SIGTERM/SIGHUP into SystemExit so every `finally` stops the servers it started.
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="CBST benchmarks (token endpoint, crypto)")
    ap.add_argument("--quick", action="store_true",
                    help="short smoke run: 2 s per point, 1 s warm-up, 1 round; short crypto loops")
    ap.add_argument("--only", choices=("token", "crypto", "codeflow"), help="run only one benchmark")
    tok = ap.add_argument_group("token endpoint")
    tok.add_argument("--duration", type=float, help="seconds per measured wrk run (default 10)")
    tok.add_argument("--warmup", type=float, help="seconds of warm-up before each run (default 2;"
                     " 0 disables)")
    tok.add_argument("--rounds", type=int, help="interleaved rounds per concurrency (default 3)")
    tok.add_argument("--concurrency", default="1,8,64",
                     help="comma-separated wrk connection counts (default 1,8,64)")
    tok.add_argument("--workers", type=int, default=2,
                     help="server worker processes for both servers (default 2)")
    tok.add_argument("--ours", choices=("auto", "idp", "stub", "none"), default="auto",
                     help="what 'ours' is: auto = `idp serve` if the venv has a working one, "
                          "else the stub; idp = fail if it does not work; stub = "
                          "bench/stub_idp.py; none = peer only")
    tok.add_argument("--quiet-wait", type=float,
                     help="before each run, wait up to this many seconds for the machine to be "
                          "idle (default 20, quick 3; 0 disables)")
    tok.add_argument("--redo-disturbed", type=int,
                     help="redo a run disturbed by other load this many times (default 1, quick 0)")
    tok.add_argument("--tmp-dir",
                     help="where the run's temp dir (ours' SQLite db, keys) goes (default: the "
                          "system temp dir; /dev/shm takes fsync out of the picture)")
    tok.add_argument("--venv", type=Path, default=REPO_DIR / ".venv",
                     help="venv with the `idp` command (default .venv)")
    cry = ap.add_argument_group("crypto")
    cry.add_argument("--crypto-rounds", type=int, help="rounds per operation (default 7)")
    cry.add_argument("--crypto-target-ms", type=float,
                     help="duration of one timed loop in ms (default 200)")
    cod = ap.add_argument_group("codeflow (authorization code round trip and refresh; --duration, --warmup, "
                                "--rounds, --quiet-wait, --redo-disturbed, --tmp-dir, --ours apply too)")
    cod.add_argument("--code-concurrency", default="1,8",
                     help="comma-separated numbers of concurrent clients (default 1,8)")
    cod.add_argument("--code-max-ops", type=int, default=20000,
                     help="a run also ends after this many operations (default 20000)")
    cod.add_argument("--code-scenarios", default="code,refresh", help="code, refresh or both (default)")
    cod.add_argument("--idp-src", type=Path, default=REPO_DIR,
                     help="checkout whose IdP is measured (put on PYTHONPATH; default: this one)")
    cod.add_argument("--code-profile", action="store_true",
                     help="py-spy on ours during one extra run per scenario: results/codeflow_profile.md")
    cod.add_argument("--no-driver-ceiling", action="store_true",
                     help="skip measuring the driver against canned responses")
    ap.add_argument("--no-install", action="store_true",
                    help="never install anything (wrk via apt, matplotlib/pyjwt/joserfc via pip, "
                         "npm ci for the peer is still done if node_modules is missing)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A shell that starts us in the background may leave SIGINT ignored; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    failures: list[str] = []
    try:
        if args.only in (None, "token"):
            import token_endpoint as te
            cfg = te.Config(
                duration=args.duration or (2.0 if args.quick else 10.0),
                warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
                concurrencies=tuple(int(c) for c in args.concurrency.split(",") if c.strip()),
                rounds=args.rounds or (1 if args.quick else 3),
                workers=args.workers,
                ours=args.ours,
                venv=args.venv.resolve(),
                allow_install=not args.no_install,
                out_dir=args.out_dir,
                quick=args.quick,
                tmp_dir=args.tmp_dir,
                quiet_wait=(args.quiet_wait if args.quiet_wait is not None
                            else (3.0 if args.quick else 20.0)),
                redo_disturbed=(args.redo_disturbed if args.redo_disturbed is not None
                                else (0 if args.quick else 1)),
            )
            try:
                res = te.run(cfg)
                _print_token_summary(res)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001 - report and go on to the next benchmark
                traceback.print_exc()
                failures.append(f"token: {e}")
        if args.only in (None, "crypto"):
            import crypto_primitives as cp
            try:
                cp.run(quick=args.quick, rounds=args.crypto_rounds,
                       target_ms=args.crypto_target_ms, allow_install=not args.no_install,
                       out_dir=args.out_dir)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                failures.append(f"crypto: {e}")
        if args.only in (None, "codeflow"):
            import codeflow as cf
            ccfg = cf.Config(
                duration=args.duration or (2.0 if args.quick else 8.0),
                warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.5),
                max_ops=args.code_max_ops,
                concurrencies=tuple(int(c) for c in args.code_concurrency.split(",") if c.strip()),
                rounds=args.rounds or (1 if args.quick else 3),
                scenarios=tuple(x.strip() for x in args.code_scenarios.split(",") if x.strip()),
                ours="none" if args.ours in ("none", "stub") else args.ours,
                venv=args.venv.resolve(),
                idp_src=args.idp_src.resolve(),
                out_dir=args.out_dir,
                quick=args.quick,
                tmp_dir=args.tmp_dir,
                quiet_wait=(args.quiet_wait if args.quiet_wait is not None else (3.0 if args.quick else 20.0)),
                redo_disturbed=(args.redo_disturbed if args.redo_disturbed is not None else (0 if args.quick else 1)),
                driver_ceiling=not args.no_driver_ceiling,
                prewarm=1.0 if args.quick else 4.0,
                profile=args.code_profile,
            )
            try:
                cf.print_summary(cf.run(ccfg))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                failures.append(f"codeflow: {e}")
    except KeyboardInterrupt:
        print("\n[bench] interrupted; servers stopped", file=sys.stderr)
        return 130
    if failures:
        print("[bench] FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def _print_token_summary(res: dict) -> None:
    print()
    print(f"{'c':>4} {'peer req/s':>11} {'p99 ms':>8} {'ours req/s':>11} {'p99 ms':>8} "
          f"{'rps ratio':>9} {'p99 ratio':>9}")
    for row in res["summary"]:
        p, o = row.get("peer", {}), row.get("ours", {})
        f = lambda x, fmt: "n/a" if x is None else fmt.format(x)  # noqa: E731
        print(f"{row['concurrency']:>4} {f(p.get('rps'), '{:.0f}'):>11} "
              f"{f(p.get('p99_ms'), '{:.2f}'):>8} {f(o.get('rps'), '{:.0f}'):>11} "
              f"{f(o.get('p99_ms'), '{:.2f}'):>8} {f(row.get('ratio_rps'), '{:.2f}'):>9} "
              f"{f(row.get('ratio_p99'), '{:.2f}'):>9}")
    if res["targets"].get("ours", {}).get("stub"):
        print("NOTE: 'ours' was the STUB (bench/stub_idp.py), not the CBST IdP.")
    print()


if __name__ == "__main__":
    sys.exit(main())
