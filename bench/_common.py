"""Helpers shared by the benchmarks: paths, machine facts, versions, dependency install."""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata as _md
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def run_text(argv: list[str], timeout: float = 30, **kw) -> str | None:
    """stdout of a command (stripped), or None if it cannot be run or fails."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip()


def machine_info() -> dict:
    info: dict = {
        "nproc": run_text(["nproc"]) or str(os.cpu_count()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "kernel": platform.release(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return info


def git_info() -> dict:
    rev = run_text(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"])
    return {"commit": rev or "(none)"}


def dist_version(name: str) -> str | None:
    try:
        return _md.version(name)
    except _md.PackageNotFoundError:
        return None


def in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def ensure_python_packages(modules: dict[str, str], allow_install: bool, log=print) -> list[str]:
    """Make sure each import name in `modules` (import name -> pip requirement) imports.

    Missing ones are pip-installed into the running interpreter's venv when allowed (never
    into a system Python). Returns the import names still missing afterwards.
    """
    missing = [m for m in modules if not _importable(m)]
    if missing and allow_install:
        if not in_venv():
            log(f"[bench] missing {missing}; not installing into a system Python "
                f"(run with the project's venv, e.g. .venv/bin/python)")
        else:
            reqs = [modules[m] for m in missing]
            log(f"[bench] installing into {sys.prefix}: {' '.join(reqs)}")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *reqs],
                           check=False)
            importlib.invalidate_caches()
    return [m for m in modules if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:
        return False


def which(name: str) -> str | None:
    return shutil.which(name)
