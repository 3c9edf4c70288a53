"""benchmarks/gpu_check.py --tiny: the prepared GPU check runs end to end on the CPU (same steps, same
commands, tiny configs), so the full-size script cannot rot between GPU runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
LATENCY_ROWS = {"teacher-unipc-s50", "dmd2-s4", "dmd2-s2", "dmd2-s1", "tmd-M2-N2H5", "tmd-M1-N2H5"}


def test_gpu_check_tiny(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))  # under xdist: its share
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["mode"] == "tiny"
    steps = {s["name"]: s for s in res["steps"]}
    for name in ("build", "latency-eager", "data-generate", "tmd-stage1", "tmd-stage2", "dmd2", "evaluate"):
        assert steps[name]["status"] == "ok", steps[name]
    assert steps["build"]["launcher"] == "spawn"  # a fresh interpreter, as every step on the GPU
    assert {steps[n]["launcher"] for n in steps if n not in ("build", "latency-compiled")} == {"fork"}
    assert steps["latency-compiled"]["status"] == "skipped"  # --tiny: no compile, and it says so
    assert "compile" in steps["latency-compiled"]["reason"]

    eager = {r["row_id"]: r for r in res["latency"] if r["pass"] == "eager"}
    assert set(eager) == LATENCY_ROWS
    for r in eager.values():
        assert r["nfe_counted"] == r["nfe"], r  # counted while timing = declared
        assert r["total_s"] > 0 and r["denoise_s"] > 0 and r["decode_s"] > 0
    assert eager["teacher-unipc-s50"]["nfe"] == 100  # 50 steps × CFG

    training = {t["name"]: t for t in res["training"]}
    assert set(training) == {"tmd-stage1", "tmd-stage2", "dmd2"}
    for t in training.values():
        assert t["iterations"] == 5 and t["s_per_iteration"] > 0 and t["peak_gib"] > 0, t
    for name in ("tmd-stage2", "dmd2"):  # 4 critic iterations and 1 student iteration each
        assert training[name]["critics_iteration_s"] > 0 and training[name]["student_iteration_s"] > 0

    assert res["data_generate"]["clips"] == 1 and res["data_generate"]["generate_s"] > 0
    evaluated = {r["row_id"]: r for r in res["evaluate"]}
    assert set(evaluated) == {"dmd2-s2", "tmd-M2-N2H5"}
    assert all(r["nfe_counted"] == r["nfe"] == 2 for r in evaluated.values())

    env_info = res["environment"]
    assert env_info["torch"] and env_info["diffusers"] and res["date"]
    md = (out / "gpu_check.md").read_text()
    for anchor in ("0.615", "1.227", "61.4", "3.24", "2.07", "2.68", "12.3"):
        assert anchor in md, anchor
    assert "not representative" in md.lower() or "NOT representative" in md
    assert "diffusers" in md and "torch" in md
    assert (out / "latency-eager.csv").is_file() and (out / "evaluate.csv").is_file()


def _gpu_check_module(monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the fork server's children import it by this name
    return importlib.import_module("gpu_check")


def test_a_forked_step_returns_its_exit_status_writes_its_log_and_stops_at_its_time_guard(tmp_path, monkeypatch):
    """--launcher fork (the default with --tiny): a step forked from the warm server behaves as the fresh
    interpreter of a GPU run does: the CLI's own exit status, its output in the step's log, and a step
    past its time guard stopped (SIGTERM to its session) with the log kept."""
    import multiprocessing
    import signal

    gc = _gpu_check_module(monkeypatch)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "tmd_bench.cli"])  # as the script does, with fewer modules
    env = {"HF_HUB_OFFLINE": "1", "COLUMNS": "200"}

    def step(name, argv, timeout):
        log = tmp_path / f"{name}.log"
        log.write_text(f"$ {name}\n")
        proc = gc._Forked(ctx, ["--_cli", str(tmp_path / f"{name}.json"), "all", "--", *argv], str(log), env)
        try:
            return proc.wait(timeout=timeout), log.read_text(), proc
        except subprocess.TimeoutExpired:
            gc._stop(proc)
            return None, log.read_text(), proc

    rc, log, _ = step("help", ["bench", "--help"], 120)
    assert rc == 0 and log.startswith("$ help\n") and "latency" in log  # appended after the header
    assert json.loads((tmp_path / "help.json").read_text())["argv"] == ["bench", "--help"]  # atexit ran

    rc, log, _ = step("bad", ["evaluate", "--no-such-option"], 120)
    assert rc == 2 and "no-such-option" in log, log

    rc, log, proc = step("slow", ["demo", "--out", str(tmp_path / "demo")], 4)
    assert rc is None and proc.process.exitcode == -signal.SIGTERM
    assert log.startswith("$ slow\n")
