"""What ``idp serve`` adds around uvicorn: the listening socket bound before anything is
announced, and workers that do not outlive their supervisor."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("cbst.idp")


class ListenError(OSError):
    """The address cannot be listened on (in use, not ours, bad host)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use fails before anything is
    announced (uvicorn would start the application first, then fail to bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)  # passed to the worker processes
    return sock


_PR_SET_PDEATHSIG = 1


def exit_with_supervisor() -> None:
    """In a worker of ``idp serve --workers N``: shut down (SIGTERM, graceful) when the supervisor
    dies, even by SIGKILL — otherwise the workers go on serving, unsupervised, holding the port.

    Linux: the kernel signals us (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent pid.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:  # a single process: no supervisor to follow
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent.pid:  # it died before prctl took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
    threading.Thread(target=_watch_parent, args=(parent.pid,), name="idp-supervisor-watch", daemon=True).start()


def _watch_parent(pid: int) -> None:
    while os.getppid() == pid:
        time.sleep(1.0)
    log.warning("supervisor process gone: shutting down", extra={"fields": {"supervisor_pid": pid}})
    os.kill(os.getpid(), signal.SIGTERM)
