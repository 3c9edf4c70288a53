"""A fork server for tests/test_crash_safety.py: imports tmd-bench (and torch, diffusers) once, then
runs each requested `tmd-bench` command line in a forked child process — a real process that the
crash hook (``TMD_BENCH_CRASH_AT``) or this server kills with SIGKILL — and reports how it ended.

Protocol (one JSON object a line): stdin ``{"argv": [...], "env": {...}, "log": PATH,
"kill_after": SECONDS | null}``; stdout ``{"rc": N}`` (exited) or ``{"signal": N}`` (killed).
``kill_after``: the server SIGKILLs the child that many seconds after it started, if still running.
The children share nothing but the imported modules: each starts from the same state (torch's
default RNG seed included, untouched here), so fresh runs are reproducible.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import diffusers  # noqa: E402,F401
from diffusers import WanTransformer3DModel  # noqa: E402,F401
from tmd_bench.distill import dmd2, kd, meanflow, rcm, tmd_train  # noqa: E402,F401

from tmd_bench import cli  # noqa: E402


def child(argv: list[str], env: dict, log: str) -> None:
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["tmd-bench", *argv]
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(req["argv"], req.get("env", {}), req["log"])
        deadline = None if req.get("kill_after") is None else time.monotonic() + req["kill_after"]
        while True:
            done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
            if done:
                break
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = None
            else:
                time.sleep(0.005)
        if os.WIFSIGNALED(status):
            print(json.dumps({"signal": os.WTERMSIG(status)}), flush=True)
        else:
            print(json.dumps({"rc": os.WEXITSTATUS(status)}), flush=True)


if __name__ == "__main__":
    serve()
