import json
import math

import pytest
import torch

from tmd_bench import harness


@pytest.mark.parametrize("solver", harness.SOLVERS)
@pytest.mark.parametrize("guidance", [1.0, 4.0])
@pytest.mark.parametrize("steps", [1, 3])
def test_counted_nfe_equals_declared(shapes_teacher, solver, guidance, steps):
    m = harness.teacher_method(shapes_teacher, solver, guidance)
    prompts = ["a small red circle moving left on a black background"] * 3
    gen = harness.generate(m, shapes_teacher, prompts, [0, 1, 2], steps, batch_size=2)
    assert gen.nfe_counted == m.declared_nfe(steps)
    assert gen.effective_nfe_counted == m.declared_effective_nfe(steps)
    assert gen.videos.shape == (3, 3, 8, 24, 24)


def test_counter_counts_rows_and_blocks(shapes_teacher):
    tr = shapes_teacher.transformer
    text = shapes_teacher.encode_text(["a", "b", "c"])
    with harness.Counter(tr, list(tr.blocks)) as c:
        shapes_teacher.velocity(torch.zeros(3, 3, 8, 24, 24), torch.tensor(0.5), text)
    assert c.network_rows == 3 and c.block_rows == 3 * len(tr.blocks)
    shapes_teacher.velocity(torch.zeros(1, 3, 8, 24, 24), torch.tensor(0.5), text[:1])
    assert c.network_rows == 3  # hooks are gone after the block


def test_sampling_is_reproducible_and_independent_of_batching(shapes_teacher):
    m = harness.teacher_method(shapes_teacher, "euler")
    prompts = [f"a small {c} circle moving left on a black background" for c in ("red", "green", "blue")]
    a = harness.generate(m, shapes_teacher, prompts, [10, 11, 12], 2, batch_size=3).videos
    b = harness.generate(m, shapes_teacher, prompts, [10, 11, 12], 2, batch_size=1).videos
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    c = harness.generate(m, shapes_teacher, prompts[:1], [99], 2).videos
    assert (a[0] - c[0]).abs().max() > 1e-3


def test_latency_stages_add_up(shapes_teacher):
    m = harness.teacher_method(shapes_teacher, "euler")
    lat = harness.measure_latency(m, shapes_teacher, "a small red circle moving left on a black background", 0, 2,
                                  warmup=1, repeats=3)
    assert lat.repeats == 3 and lat.denoise_s > 0 and lat.text_s > 0 and lat.decode_s >= 0
    assert lat.total_s >= lat.denoise_s
    assert lat.peak_memory_mb > 0
    cols = lat.columns(frames=8)
    assert cols["fps"] == pytest.approx(8 / lat.total_s)


def test_unknown_solver_is_an_error(shapes_teacher):
    with pytest.raises(ValueError, match="unknown solver"):
        harness.teacher_method(shapes_teacher, "heun")


def test_bench_tmd_measures_positive_times_and_the_declared_effective_nfe():
    """The benchmark prints figures (never asserted against a target); here only that it measures."""
    from conftest import tiny_shapes_teacher

    from tmd_bench.bench import bench_tmd

    r = bench_tmd(tiny_shapes_teacher(), head_blocks=1, batch_size=2, warmup=0, repeats=1, sampler_batch=2)
    assert r.sampler_batch == 2 and r.effective_nfe == 2 * (1 + (2 - 1) * 1 / r.blocks)
    assert min(r.student_update_rollout_s, r.student_update_no_rollout_s, r.teacher_forward_s, r.sampler_s,
               r.fusion_s) > 0
    assert dict(r.rows())["configuration"].startswith("M2-N2H1")
    # FLOPs: the rollout's extra head pass costs something, and the fusion block is part of what the
    # sampler adds beyond effective NFE × forward
    assert r.update_rollout_flops > r.update_no_rollout_flops > 0
    assert r.sampler_overhead_flops > r.fusion_share_flops > 0


def test_bench_tmd_counts_flops_of_a_full_wan_config_on_the_meta_device():
    """`--device meta`: the Wan2.1-1.3B architecture, no memory, no timing; at Wan's width the fusion
    block is a small share of a 30-block forward, so the FLOP overhead is small (and all fusion)."""
    from dataclasses import replace

    from tmd_bench.bench import bench_tmd
    from tmd_bench.teachers import random_wan_teacher

    t = random_wan_teacher("wan2.1-1.3b", device="meta")
    t.spec = replace(t.spec, frames=5, height=480, width=832)  # 3,120 tokens (a tiny clip is text-projection bound)
    r = bench_tmd(t, head_blocks=5, batch_size=1, update=False)
    assert r.teacher_forward_s is None and r.sampler_overhead is None and r.update_rollout_flops is None
    assert r.effective_nfe == pytest.approx(2.333, abs=1e-3)
    assert r.teacher_forward_flops > 5e12
    assert 0 < r.fusion_share_flops < r.sampler_overhead_flops + 1e-3 < 0.05
    assert dict(r.rows())["sampler overhead vs eff. NFE × forward, wall / FLOPs"].startswith("— / +")


def test_bench_latency_counts_every_plan_row_on_a_wan_checkpoint(wan_teacher_dir, tmp_path):
    """`bench latency` through the CLI on the tiny Wan checkpoint (VAE decode included): counted NFE and
    executed blocks equal the declared ones for the teacher, DMD2-v and TMD."""
    from dataclasses import replace

    import pandas as pd
    from tmd_bench.reports.html import build_report
    from typer.testing import CliRunner

    from tmd_bench.bench import bench_latency
    from tmd_bench.cli import app
    from tmd_bench.teachers import load_teacher

    teacher = load_teacher("wan2.1-1.3b", wan_teacher_dir)
    teacher.spec = replace(teacher.spec, frames=5, height=32, width=32)
    rows = bench_latency(teacher, plan=(("teacher-euler", 2, None), ("dmd2", 2, None), ("tmd", 2, 2)),
                         warmup=0, repeats=1)
    by = {r["row_id"]: r for r in rows}
    assert set(by) == {"teacher-euler-s2", "dmd2-s2", "tmd-M2-N2H1"}
    for r in rows:
        assert r["nfe_counted"] == r["nfe"] and r["effective_nfe"] == pytest.approx(r["effective_nfe_declared"])
        assert r["latency_decode_s"] > 0 and r["latency_total_s"] >= r["latency_denoise_s"]
    assert by["teacher-euler-s2"]["nfe"] == 4 and by["tmd-M2-N2H1"]["effective_nfe"] == pytest.approx(2 * 5 / 4)
    r = CliRunner().invoke(app, ["bench", "latency", "--teacher", "wan2.1-1.3b", "--teacher-path", str(wan_teacher_dir),
                                 "--frames", "5", "--height", "32", "--width", "32", "--repeats", "1", "--warmup", "0",
                                 "--out", str(tmp_path / "lat")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "lat" / "results.csv")
    # the teacher row samples with the checkpoint's own scheduler (this fixture saved a FlowMatchEuler one)
    assert list(df["row_id"]) == ["teacher-fmeuler-s50", "dmd2-s4", "dmd2-s2", "dmd2-s1", "tmd-M2-N2H1", "tmd-M1-N2H1"]
    assert (df["nfe"] == df["nfe_counted"]).all()
    _, html = build_report([tmp_path / "lat"], tmp_path / "rep")  # timing rows alone: a latency/NFE view
    page = html.read_text()
    assert "no quality metric" in page.lower() and all(r in page for r in df["row_id"])


def test_compile_keeps_counts_and_samples_and_reports_its_time_apart(wan_pipeline_dir, tmp_path, monkeypatch):
    """`evaluate --compile`: the blocks go through torch.compile (backend "eager" here: traced, no codegen),
    counted NFE stays exact (the hooks sit outside the compiled region), the samples equal eager ones, and
    the compiling warm-up is reported as compile_s, apart from the timed runs."""
    import pandas as pd
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from tmd_bench.cli import app

    monkeypatch.setenv("TMD_BENCH_COMPILE_BACKEND", "eager")
    (tmp_path / "p.txt").write_text("a cat sitting on the grass\na dog running\n")
    base = ["evaluate", "--teacher", "wan2.1-1.3b", "--teacher-path", str(wan_pipeline_dir), "--device", "cpu",
            "--methods", "teacher-unipc", "--steps", "2", "--frames", "5", "--height", "32", "--width", "32",
            "--prompts", str(tmp_path / "p.txt"), "--latency-repeats", "1"]
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        r = CliRunner().invoke(app, [*base, *extra, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    eager, compiled = (pd.read_csv(tmp_path / n / "results.csv").iloc[0] for n in ("eager", "compiled"))
    assert bool(compiled["compile"]) and not bool(eager["compile"]) and compiled["compile_s"] >= 0
    assert "compile_s" not in eager and compiled["nfe_counted"] == eager["nfe_counted"] == 4
    a, b = (load_file(str(tmp_path / n / "samples" / "teacher-unipc-s2.safetensors"))["videos"]
            for n in ("eager", "compiled"))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    card = json.loads((tmp_path / "compiled" / compiled["run_card"]).read_text())
    assert card["latency_protocol"]["torch_compile"] and "--compile" in card["command"]
    r = CliRunner().invoke(app, [*base, "--compile", "--latency-warmup", "0", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--compile needs --latency-warmup" in r.output


def test_compile_blocks_defaults_to_inductor_honours_the_environment_and_compiles_shared_blocks_once(monkeypatch):
    import torch

    from tmd_bench import harness

    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: seen.append(options) or fn)
    monkeypatch.delenv("TMD_BENCH_COMPILE_BACKEND", raising=False)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert harness.compile_blocks([a, b, a]) == 2  # a block shared between networks: compiled once
    assert [o["backend"] for o in seen] == ["inductor", "inductor"]
    monkeypatch.setenv("TMD_BENCH_COMPILE_BACKEND", "eager")
    assert harness.compile_blocks([torch.nn.Linear(2, 2)]) == 1 and seen[-1]["backend"] == "eager"
    assert harness.compile_blocks([torch.nn.Linear(2, 2)], backend="aot_eager", mode="max-autotune") == 1
    assert seen[-1] == {"backend": "aot_eager", "mode": "max-autotune"}  # an explicit choice wins
    assert harness.compile_blocks([a, b]) == 0


def test_counter_counts_each_network_apart_positional_or_keyword():
    """Wan2.2 A14B's two experts: one Counter over both, rows per network, inputs given by keyword too."""
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with harness.Counter([a, b], [a]) as c:
        a(torch.zeros(3, 2))
        b(torch.zeros(2, 2))
        b(input=torch.zeros(1, 2))
    assert c.networks == [a, b] and c.rows_by_network == [3, 3] and c.network_rows == 6 and c.block_rows == 3
    with harness.Counter(b, []) as single:
        b(torch.zeros(4, 2))
    assert single.networks == [b] and single.rows_by_network == [4] and single.network_rows == 4


def test_generate_passes_each_clips_seed_and_reports_nfe_per_network():
    """TMD draws its inner noise from each clip's seed: a batch of 3 equals batches of 2 + 1 only if the
    seeds reach the sampler; NFE per network is per clip (the rows over the clips)."""
    import copy

    from conftest import tiny_shapes_teacher
    from tmd_bench.distill.tmd import TMDConfig, TMDStudent, tmd_method

    teacher = tiny_shapes_teacher(seed=3)
    st = TMDStudent(copy.deepcopy(teacher.transformer), TMDConfig(2, 2, 2))
    with torch.no_grad():  # a live fusion: the head reads its noisy input (at initialisation it does not)
        st.fusion.out.weight.normal_(0, 0.3)
    method = tmd_method(st)
    prompts = ["a small red circle moving left on a black background", "two large blue squares standing still"] * 2
    seeds = [4, 5, 6, 7]
    whole = harness.generate(method, teacher, prompts[:3], seeds[:3], 2, batch_size=3)
    split = harness.generate(method, teacher, prompts[:3], seeds[:3], 2, batch_size=2)
    torch.testing.assert_close(whole.videos, split.videos, rtol=1e-5, atol=1e-5)
    assert whole.nfe_counted == 2 and whole.nfe_by_network == {}  # one network: no per-network columns
    from dataclasses import replace

    two = replace(method, network=[method.network, torch.nn.Linear(1, 1)], network_names=("student", "idle"))
    per = harness.generate(two, teacher, prompts[:3], seeds[:3], 2, batch_size=2)
    assert per.nfe_by_network == {"student": 2.0, "idle": 0.0} and per.nfe_counted == 2
    other = harness.generate(method, teacher, prompts[:3], [4, 5, 8], 2, batch_size=3)
    assert (other.videos[2] - whole.videos[2]).abs().max() > 1e-3  # the third clip's seed moved it
    torch.testing.assert_close(other.videos[:2], whole.videos[:2], rtol=1e-5, atol=1e-5)


def test_latency_columns_name_every_stage_and_count_frames_per_second_over_the_batch():
    lat = harness.Latency(text_s=0.1, denoise_s=0.5, decode_s=0.4, total_s=1.0, total_spread_s=0.05, repeats=3,
                          warmup=1, batch_size=4, peak_memory_mb=12.5, memory_kind="cpu-rss",
                          denoise_by_network_s={"high": 0.3, "low": 0.2})
    assert lat.columns(frames=8) == {
        "latency_text_s": 0.1, "latency_denoise_s": 0.5, "latency_decode_s": 0.4, "latency_total_s": 1.0,
        "latency_total_spread_s": 0.05, "fps": 32.0, "peak_memory_mb": 12.5,
        "latency_denoise_high_s": 0.3, "latency_denoise_low_s": 0.2}
    zero = harness.Latency(0.0, 0.0, 0.0, 0.0, 0.0, 1, 0, 1, 0.0, "cpu-rss")
    assert math.isnan(zero.columns(frames=8)["fps"])


def test_latency_inside_each_network_is_timed_apart_and_an_idle_network_takes_no_time(shapes_teacher):
    from dataclasses import replace

    method = harness.teacher_method(shapes_teacher, "euler", 4.0)
    two = replace(method, network=[method.network, torch.nn.Linear(1, 1)], network_names=("teacher", "idle"))
    lat = harness.measure_latency(two, shapes_teacher, "a small red circle moving left on a black background", 0, 2,
                                  warmup=0, repeats=1)
    assert lat.denoise_by_network_s["idle"] == 0.0
    assert 0 < lat.denoise_by_network_s["teacher"] <= lat.denoise_s


def test_sync_waits_for_cuda_only(monkeypatch):
    """The timers' synchronisation (a GPU path: without it CUDA timings measure the launch, not the work)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    harness.sync(torch.device("cpu"))
    assert calls == []
    cuda = torch.device("cuda", 0)
    harness.sync(cuda)
    assert calls == [cuda]


def test_latency_records_its_protocol_and_the_process_peak_memory_in_mib(shapes_teacher):
    import resource

    method = harness.teacher_method(shapes_teacher, "euler", 4.0)
    lat = harness.measure_latency(method, shapes_teacher, "a small red circle moving left on a black background", 0, 1,
                                  warmup=2, repeats=3, batch_size=2)
    assert (lat.warmup, lat.repeats, lat.batch_size, lat.memory_kind) == (2, 3, 2, "process_peak_rss")
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    assert lat.peak_memory_mb == pytest.approx(rss_mib, rel=0.05)
    assert lat.first_total_s > 0 and lat.total_spread_s >= 0


def test_time_inside_a_network_adds_up_over_its_calls(shapes_teacher, monkeypatch):
    """A fake clock (+1 s per reading): every network call lasts exactly 1 s between its entry and exit
    hooks, so the time inside is the number of calls, not the last call's."""
    import itertools
    from dataclasses import replace

    method = harness.teacher_method(shapes_teacher, "euler", 4.0)
    two = replace(method, network=[method.network, torch.nn.Linear(1, 1)], network_names=("teacher", "idle"))
    calls = []
    handle = method.network.register_forward_hook(lambda *a: calls.append(1))
    clock = itertools.count()
    monkeypatch.setattr(harness.time, "perf_counter", lambda: float(next(clock)))
    try:
        lat = harness.measure_latency(two, shapes_teacher, "a small red circle moving left on a black background", 0, 3,
                                      warmup=0, repeats=1)
    finally:
        handle.remove()
    assert len(calls) >= 3 and lat.denoise_by_network_s == {"teacher": float(len(calls)), "idle": 0.0}


@pytest.mark.parametrize("platform,unit", [("linux", 2**10), ("darwin", 1)])
def test_process_peak_memory_reads_ru_maxrss_in_the_platforms_unit(shapes_teacher, monkeypatch, platform, unit):
    """getrusage's ru_maxrss is KiB on Linux and bytes on macOS; the row's peak is MiB on both."""
    import types

    monkeypatch.setattr(harness.sys, "platform", platform)
    monkeypatch.setattr(harness.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=5 * 2**20 // unit))
    method = harness.teacher_method(shapes_teacher, "euler", 4.0)
    lat = harness.measure_latency(method, shapes_teacher, "a small red circle moving left on a black background", 0, 1,
                                  warmup=0, repeats=1)
    assert (lat.peak_memory_mb, lat.memory_kind) == (5.0, "process_peak_rss")
