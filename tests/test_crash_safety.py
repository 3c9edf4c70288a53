"""Crash safety of distillation runs (issue 12, item 6): a run killed with SIGKILL at any moment —
between iterations, right after a log row, or inside a save between its files — or stopped by a full
disk, then resumed with ``--resume``, ends bit-identical to an uninterrupted run: every checkpoint and
student tensor, ``state.json`` and ``log.csv`` (but ``elapsed_s``).

The runs are real ``tmd-bench distill`` command lines on the tiny Shapes teacher, each in its own
process forked by ``tests/crash_worker.py`` (one import of torch for the module); the kills come from
the trainer's ``TMD_BENCH_CRASH_AT`` hook (the process SIGKILLs itself at the named point) or from
the server (SIGKILL after a seeded random delay). ``--checkpoint-every`` 7 and 4 are not multiples of
the trainer's log interval (10), so a resume lands inside a log row's averaging window.
"""

from __future__ import annotations

import errno
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_shapes_teacher
from safetensors.torch import load_file

from tmd_bench import checkpoint as ckpt

WORKER = Path(__file__).with_name("crash_worker.py")
LOG_EVERY = 10  # distill.trainer.train's default, which every `tmd-bench distill` run uses

# name -> (extra argv, [(method name, training folder under --out, iterations)], checkpoint_every)
CASES = {
    "dmd2": (["--method", "dmd2", "--steps", "2", "--iterations", "23"], [("dmd2", "dmd2", 23)], 7),
    "tmd": (["--method", "tmd", "--outer-steps", "2", "--inner-steps", "2", "--head-blocks", "2",
             "--stage1-iterations", "13", "--stage2-iterations", "12"],
            [("tmd-stage1", "stage1", 13), ("tmd-stage2", "stage2", 12)], 4),
    "kd": (["--method", "kd", "--iterations", "12", "--kd-pairs", "4", "--kd-teacher-steps", "1"],
           [("kd", ".", 12)], 7),
    "rcm": (["--method", "rcm", "--iterations", "12"], [("rcm", ".", 12)], 7),
    "meanflow": (["--method", "meanflow", "--iterations", "12"], [("meanflow", ".", 12)], 7),
}


class Server:
    def __init__(self, log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=Path(__file__).parent)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, argv, crash: str | None = None, kill_after: float | None = None) -> dict:
        req = {"argv": [str(a) for a in argv], "env": {ckpt.CRASH_ENV: crash} if crash else {},
               "log": str(self.log), "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the crash worker died; its log: {self.tail()}"
        return json.loads(line)

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one thread is several times faster than two on a busy machine (the forked
    runs get OMP_NUM_THREADS=1 from the worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher():
    return tiny_shapes_teacher()  # the in-process tests train TMD stage 1 (a copy of it): it is not changed


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("crash-worker") / "children.log")
    yield s
    s.close()


def argv(case: str, teacher_dir: Path, out: Path, resume: bool = False) -> list:
    extra, _, every = CASES[case]
    return ["distill", "--teacher-path", teacher_dir, *extra, "--batch-size", "2", "--checkpoint-every", every,
            "--device", "cpu", "--out", out, *(["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def reference(server, shapes_teacher_dir, tmp_path_factory):
    """The uninterrupted run of each case (made once)."""
    done: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in done:
            out = tmp_path_factory.mktemp(f"reference-{case}")
            r = server.run(argv(case, shapes_teacher_dir, out))
            assert r == {"rc": 0}, server.tail()
            done[case] = out
        return done[case]

    return get


def finish(server, case, teacher_dir, out) -> None:
    r = server.run(argv(case, teacher_dir, out, resume=True))
    assert r == {"rc": 0}, server.tail()


def log_rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    drop = lines[0].split(",").index("elapsed_s")
    return [[c for i, c in enumerate(line.split(",")) if i != drop] for line in lines]


def assert_identical(case: str, ref: Path, got: Path) -> None:
    """Same checkpoint (every tensor, its sha256), same state.json but for elapsed_s, same log.csv
    but for elapsed_s, same exported student (every tensor, its configs); nothing left over."""
    for _, sub, iterations in CASES[case][1]:
        a, b = ref / sub, got / sub
        ta, ma = ckpt.load_checkpoint(a)
        tb, mb = ckpt.load_checkpoint(b)
        assert mb["iteration"] == iterations and mb["exported"]
        assert set(ta) == set(tb), sub
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{sub}: checkpoint tensor {k} differs"
        for m in (ma, mb):  # the time, and the log's length (elapsed_s is in it)
            m.pop("elapsed_s"), m.pop("log_bytes")
        assert ma == mb, sub
        assert log_rows(a / "log.csv") == log_rows(b / "log.csv"), sub
        files = sorted(p.relative_to(a / "student") for p in (a / "student").rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b / "student") for p in (b / "student").rglob("*") if p.is_file())
        for f in files:
            if f.suffix == ".safetensors":
                sa, sb = load_file(str(a / "student" / f)), load_file(str(b / "student" / f))
                assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa), f"{sub}: student {f}"
            elif f.suffix == ".json":  # diffusers records the folder a transformer was loaded from, the
                ja, jb = (json.loads((x / "student" / f).read_text()) for x in (a, b))  # pipeline index the
                for j in (ja, jb):  # command that made it: the runs' folders differ, nothing else may
                    j.pop("_name_or_path", None), j.pop("_command", None)
                assert ja == jb, f"{sub}: student {f}"
            else:  # the model card ends with the command that made the student (its --out differs)
                ta_, tb_ = ((x / "student" / f).read_text().split("## Made by")[0] for x in (a, b))
                assert ta_ == tb_, f"{sub}: student {f}"
        left = sorted(p.name for p in b.iterdir() if p.name.endswith((".tmp", ".old")) or
                      (p.name.startswith(ckpt.CHECKPOINT_PREFIX) and p.name != mb["checkpoint"]["dir"]))
        assert not left, f"{sub}: left over {left}"
        assert not (b / ckpt.STATE_TENSORS).exists()


def kill_points(case: str, phases: tuple[str, ...], n: int, seed: int) -> list[str]:
    """``n`` distinct crash points, in the order a run reaches them, drawn with ``seed``."""
    _, stages, every = CASES[case]
    points = []
    for order, (name, _, iterations) in enumerate(stages):
        for it in range(1, iterations + 1):
            logged = it % LOG_EVERY == 0 or it == iterations
            saved = it % every == 0 or it == iterations
            for phase in phases:
                if phase == "step" or (phase == "logged" and logged) or (phase not in ("step", "logged") and saved):
                    points.append((order, it, phases.index(phase), f"{name}@{it}:{phase}"))
    return [p[-1] for p in sorted(random.Random(seed).sample(points, n))]


# (a) SIGKILL at random iterations (seeded), twice or three times per run, then resume to completion


@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_at_random_iterations_then_resume_is_bit_identical(case, server, reference, shapes_teacher_dir,
                                                                     tmp_path):
    out = tmp_path / "run"
    points = kill_points(case, ("step", "logged"), 3 if case == "tmd" else 2, seed=sum(map(ord, case)))
    for i, point in enumerate(points):
        r = server.run(argv(case, shapes_teacher_dir, out, resume=i > 0), crash=point)
        assert r == {"signal": 9}, f"{point} was not reached: {r} {server.tail()}"
    finish(server, case, shapes_teacher_dir, out)
    assert_identical(case, reference(case), out)


def test_an_uninterrupted_run_is_reproducible(server, reference, shapes_teacher_dir, tmp_path):
    """The comparisons above stand on this: two fresh runs (stage 2's new networks included) agree."""
    r = server.run(argv("tmd", shapes_teacher_dir, tmp_path / "again"))
    assert r == {"rc": 0}, server.tail()
    assert_identical("tmd", reference("tmd"), tmp_path / "again")


@pytest.mark.parametrize("case", ["dmd2", "tmd"])
def test_sigkill_at_random_times_then_resume_is_bit_identical(case, server, reference, shapes_teacher_dir, tmp_path):
    """The server kills the run after seeded random delays (wherever it is: loading, a step, a save)."""
    out, rng = tmp_path / "run", random.Random(7 + len(case))
    for i in range(4):
        r = server.run(argv(case, shapes_teacher_dir, out, resume=i > 0), kill_after=rng.uniform(0.3, 2.5))
        assert r in ({"signal": 9}, {"rc": 0}), server.tail()
        if r == {"rc": 0}:
            break
    else:
        finish(server, case, shapes_teacher_dir, out)
    assert_identical(case, reference(case), out)


# (b) a crash inside a save, between its files


SAVE_CRASHES = [  # (case, method, iteration, phase, the checkpoint state.json names right after the crash)
    ("dmd2", "dmd2", 14, "tensors", 7),
    ("dmd2", "dmd2", 14, "renamed", 7),
    ("dmd2", "dmd2", 21, "committed", 21),
    ("dmd2", "dmd2", 23, "exporting", 23),
    ("dmd2", "dmd2", 23, "tensors", 21),
    ("tmd", "tmd-stage1", 13, "exporting", 13),  # stage 1's last save: stage 2 starts from its export
    ("tmd", "tmd-stage1", 13, "exported", 13),
    ("tmd", "tmd-stage2", 8, "renamed", 4),
    ("tmd", "tmd-stage2", 12, "tensors", 8),
]


@pytest.mark.parametrize("case,method,iteration,phase,current", SAVE_CRASHES,
                         ids=[f"{c[1]}@{c[2]}:{c[3]}" for c in SAVE_CRASHES])
def test_a_crash_inside_a_save_resumes_from_a_consistent_checkpoint(case, method, iteration, phase, current, server,
                                                                     reference, shapes_teacher_dir, tmp_path):
    out = tmp_path / "run"
    r = server.run(argv(case, shapes_teacher_dir, out), crash=f"{method}@{iteration}:{phase}")
    assert r == {"signal": 9}, server.tail()
    folder = out / next(sub for name, sub, _ in CASES[case][1] if name == method)
    tensors, meta = ckpt.load_checkpoint(folder)  # consistent: size and sha256 as the manifest says
    assert meta["iteration"] == current and meta["data_position"] >= current
    assert meta["exported"] == (phase not in ("committed", "exporting", "exported") or current != iteration)
    if phase == "exporting":
        assert (folder / "student.tmp").is_dir()  # the new export was never swapped in
    finish(server, case, shapes_teacher_dir, out)
    assert_identical(case, reference(case), out)


# (c) a full disk during a save (in process)

def _stage1(teacher):
    import copy

    from tmd_bench.distill.tmd import TMDStudent
    from tmd_bench.distill.tmd_train import TMDStage1, TMDTrainConfig

    cfg = TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=2, batch_size=2, stage1_lr=1e-3,
                         stage1_iterations=11, teacher_guidance=2.0)
    torch.manual_seed(0)  # stop-gap: the new layers' initialisation (resume overwrites it anyway)
    return TMDStage1(teacher, TMDStudent(copy.deepcopy(teacher.transformer), cfg.tmd), cfg)


def _train(teacher, out, iterations=11, resume=False, method=None):
    from tmd_bench.distill.data import WorldBatches
    from tmd_bench.distill.trainer import train

    method = method or _stage1(teacher)
    train(method, WorldBatches(teacher, 2), out, iterations, resume=resume, checkpoint_every=3)
    return method


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def stage1_reference(teacher, tmp_path_factory):
    ref = tmp_path_factory.mktemp("stage1-reference")
    _train(teacher, ref)
    return ref


@pytest.mark.parametrize("where", ["tensors", "manifest", "export"])
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(where, teacher, stage1_reference, tmp_path,
                                                                 monkeypatch):
    ref = stage1_reference
    out = tmp_path / "run"
    method = _stage1(teacher)
    calls = {"n": 0}

    def third(real):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:  # the save at iteration 9 (3 and 6 went through)
                _enospc()
            return real(*args, **kwargs)
        return wrapped

    with monkeypatch.context() as m:
        if where == "tensors":
            m.setattr(ckpt, "save_file", third(ckpt.save_file))
        elif where == "manifest":
            real_write = ckpt._write_bytes
            counted = third(real_write)
            m.setattr(ckpt, "_write_bytes", lambda p, d: counted(p, d) if p.name == "state.json.tmp" and
                      not json.loads(d).get("exported") else real_write(p, d))
        else:
            m.setattr(method, "export", third(method.export))
        with pytest.raises(OSError) as e:
            _train(teacher, out, method=method)
    assert e.value.errno == errno.ENOSPC
    tensors, meta = ckpt.load_checkpoint(out)
    assert meta["iteration"] == (9 if where == "export" else 6)
    assert meta["exported"] == (where != "export")
    # nothing partial left: the one checkpoint, its manifest, the previous export (no log row before 10)
    assert sorted(p.name for p in out.iterdir()) == ["ckpt-%08d" % meta["iteration"], "state.json", "student"]
    from tmd_bench.distill.tmd import load_student

    load_student(out / "student", teacher)  # the previous export is whole
    _train(teacher, out, resume=True)
    for k, v in ckpt.load_checkpoint(ref)[0].items():
        assert torch.equal(v, ckpt.load_checkpoint(out)[0][k]), k
    assert log_rows(ref / "log.csv") == log_rows(out / "log.csv")


# the manifest's checks, the old layout, the log


def test_a_corrupt_or_truncated_checkpoint_is_a_clear_error(teacher, tmp_path):
    _train(teacher, tmp_path, iterations=3)
    path = ckpt.tensors_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CorruptCheckpoint, match="sha256"):
        _train(teacher, tmp_path, iterations=6, resume=True)
    path.write_bytes(bytes(data[:-5]))
    with pytest.raises(ckpt.CorruptCheckpoint, match="bytes"):
        _train(teacher, tmp_path, iterations=6, resume=True)


def test_an_old_layout_checkpoint_still_resumes(teacher, tmp_path):
    """tmd-bench before crash safety: state.safetensors beside state.json, no log window."""
    ref = _train(teacher, tmp_path / "ref", iterations=9)
    out = tmp_path / "old"
    _train(teacher, out, iterations=6)
    meta = json.loads((out / "state.json").read_text())
    ckpt.tensors_path(out).rename(out / ckpt.STATE_TENSORS)
    (out / meta["checkpoint"]["dir"]).rmdir()
    for k in ("checkpoint", "log_window", "log_bytes", "exported"):
        meta.pop(k)
    (out / "state.json").write_text(json.dumps(meta))
    resumed = _train(teacher, out, iterations=9, resume=True)
    for (k, a), b in zip(ref.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), k
    assert not (out / ckpt.STATE_TENSORS).exists() and ckpt.tensors_path(out).parent.name == "ckpt-00000009"


def test_metrics_log_resume_cuts_to_the_checkpoints_length_or_drops_a_half_written_row(tmp_path):
    path = tmp_path / "log.csv"
    log = ckpt.MetricsLog(path)
    for step in (10, 20):
        log.append({"iteration": step, "loss": 1.0})
    size = log.sync()
    log.append({"iteration": 30, "loss": 1.0})
    with open(path, "a") as f:
        f.write("4")  # a row cut short by a kill (its step would read as 4)
    ckpt.MetricsLog(path, resume_step=25, resume_bytes=size).append({"iteration": 30, "loss": 2.0})
    assert path.read_text() == "iteration,loss\n10,1\n20,1\n30,2\n"
    with open(path, "a") as f:
        f.write("4")
    ckpt.MetricsLog(path, resume_step=30)  # no recorded length (an old checkpoint): by step, torn row dropped
    assert path.read_text() == "iteration,loss\n10,1\n20,1\n30,2\n"
    ckpt.MetricsLog(path, resume_step=3, resume_bytes=0)
    assert not path.exists()


def test_the_crash_hook_is_inert_unless_it_names_this_point(monkeypatch):
    monkeypatch.delenv(ckpt.CRASH_ENV, raising=False)
    ckpt.crash_point("step", "dmd2", 3)
    monkeypatch.setenv(ckpt.CRASH_ENV, "tmd-stage2@3:tensors")
    for point in (("step", "tmd-stage2", 3), ("tensors", "tmd-stage1", 3), ("tensors", "tmd-stage2", 4)):
        ckpt.crash_point(*point)
    monkeypatch.setenv(ckpt.CRASH_ENV, "5")
    ckpt.crash_point("logged", "kd", 5)
    monkeypatch.setenv(ckpt.CRASH_ENV, "dmd2@5:inside")
    with pytest.raises(ValueError, match="PHASE one of"):
        ckpt.crash_point("step", "dmd2", 1)


def test_side_by_side_state_reads_the_copy_saved_with_the_tensors(tmp_path):
    """The Shapes teacher's layout: killed between the tensors' rename and state.json's, the folder
    holds new tensors and an old state.json; load_state takes the step saved with the tensors."""
    ckpt.save_state(tmp_path, {"w": torch.zeros(2)}, {"step": 1})
    old = (tmp_path / ckpt.STATE_META).read_text()
    ckpt.save_state(tmp_path, {"w": torch.ones(2)}, {"step": 2})
    (tmp_path / ckpt.STATE_META).write_text(old)
    tensors, meta = ckpt.load_state(tmp_path)
    assert meta == {"step": 2} and torch.equal(tensors["w"], torch.ones(2))
