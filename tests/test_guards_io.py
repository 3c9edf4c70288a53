"""Guards on input/output paths whose existing tests used the code under test as their own reference.

1. CLIP preprocessing (metrics/clip.py) against open_clip's OWN eval transform for the model's config
   (``create_model_and_transforms``: PIL frames → Resize → CenterCrop → ToTensor → Normalize) and
   ``model.encode_image`` — never the scorer's feature function.
2. ``tmd-bench data encode`` on the pixel-space Shapes teacher: videos with a known asymmetric pattern
   (frame index as red brightness, a left→right green gradient, a white top-left corner in frame 0
   only), written as .safetensors / .gif / .mp4, read back from the shards: position and frame order kept.
3. The shipped students: every entry the demo evaluates is present and loadable, with provenance.
4. CLI commands no other test ran end to end: ``teacher list``, ``report``, ``bench tmd``, ``teacher train``
   (with and without ``--export``, redirected away from the shipped teacher) and
   ``metrics train-shapes-clip``.

Nothing here downloads anything or writes under tmd_bench/assets/ (asserted byte for byte).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tmd_bench.cli import app

ASSETS = Path(__file__).resolve().parents[1] / "tmd_bench" / "assets"


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path → digest)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def assets_guard(monkeypatch):
    """Refuse any rmtree / copytree / copy that would write under the shipped assets, and check after the
    test that every shipped file is byte-identical to what it was before."""
    before = tree_digest(ASSETS)
    real_rmtree, real_copytree, real_copy = shutil.rmtree, shutil.copytree, shutil.copy

    def inside_assets(path) -> bool:
        p = Path(path).resolve()
        return p == ASSETS or ASSETS in p.parents

    def rmtree(path, *a, **k):
        assert not inside_assets(path), f"a test tried to delete shipped assets: {path}"
        return real_rmtree(path, *a, **k)

    def copytree(src, dst, *a, **k):
        assert not inside_assets(dst), f"a test tried to write shipped assets: {dst}"
        return real_copytree(src, dst, *a, **k)

    def copy(src, dst, *a, **k):
        assert not inside_assets(dst), f"a test tried to write shipped assets: {dst}"
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(shutil, "copytree", copytree)
    monkeypatch.setattr(shutil, "copy", copy)
    yield
    assert tree_digest(ASSETS) == before, "the shipped assets under tmd_bench/assets/ changed"


# =============================================================================================
# 1. CLIP preprocessing against open_clip's own transform

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CLIP_NAME = "guards-io-tiny-clip"  # registered under its own name: no clash with tests/metrics/test_clip.py


@pytest.fixture(scope="module")
def tiny_clip_weights(tmp_path_factory):
    """A tiny random open_clip model built in place (as tests/metrics/test_clip.py does), saved as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("guards-clip")
    (folder / f"{CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / f"{CLIP_NAME}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_NAME, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))
    return folder / "w.safetensors"


def open_clip_model_and_transform(weights: Path, **force):
    """open_clip's model with its OWN validation transform for this config (mean/std/resize from open_clip's
    preprocess config, optionally forced as a user would: image_mean=…, image_std=…), the same weights."""
    import open_clip
    from safetensors.torch import load_file

    model, _, val = open_clip.create_model_and_transforms(CLIP_NAME, pretrained=None, **force)
    model.load_state_dict(load_file(str(weights)))
    return model.eval().requires_grad_(False), val


def uint8_videos(b: int, f: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Clips in [−1, 1] that are exactly uint8 frames (k/127.5 − 1), with smooth structure and strong colour
    so that the mean/std matter: PIL sees the very same pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b * f, 3, 4, 5, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x[:, 0] = 0.6 * x[:, 0] + 0.4  # a red cast: channels differ in mean, as photos do
    u8 = (x * 255).round().clamp(0, 255)
    return (u8 / 127.5 - 1).view(b, f, 3, h, w).transpose(1, 2).contiguous()


def reference_features(model, transform, videos: torch.Tensor, normalise: str = "yes") -> torch.Tensor:
    """Unit image features ``(B, F, D)`` through open_clip's transform on PIL frames. ``normalise``: "yes"
    (the full transform), "no" (every step but its Normalize), "mean" (mean subtracted, no /std) or
    "std" (divided by std, no mean) — what a scorer that skips (part of) the normalisation would feed."""
    from PIL import Image
    from torchvision.transforms import Normalize

    b, _, f = videos.shape[:3]
    u8 = ((videos + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    steps = list(transform.transforms)
    norm = next(t for t in steps if isinstance(t, Normalize))
    before_norm = [t for t in steps if not isinstance(t, Normalize)]
    mean, std = torch.tensor(norm.mean).view(3, 1, 1), torch.tensor(norm.std).view(3, 1, 1)
    out = []
    for i in range(b):
        for j in range(f):
            x = Image.fromarray(u8[i, j])
            for t in before_norm:
                x = t(x)
            x = {"yes": (x - mean) / std, "no": x, "mean": x - mean, "std": x / std}[normalise]
            out.append(x)
    with torch.no_grad():
        feats = model.encode_image(torch.stack(out)).float()
    return torch.nn.functional.normalize(feats, dim=-1).view(b, f, -1)


def reference_score(model, transform, videos, prompts) -> torch.Tensor:
    """CLIP score by open_clip alone: its transform, its tokenizer, encode_image / encode_text."""
    import open_clip

    img = reference_features(model, transform, videos)
    with torch.no_grad():
        txt = model.encode_text(open_clip.get_tokenizer(CLIP_NAME)(prompts)).float()
    cos = torch.einsum("bfd,bd->bf", img, torch.nn.functional.normalize(txt, dim=-1))
    return (100 * cos).clamp_min(0).mean(1)


def test_clip_features_equal_open_clips_own_transform_and_skipping_normalisation_is_seen(tiny_clip_weights):
    """Square frames at the model's input size (resize and crop are no-ops; only the normalisation acts):
    our features equal open_clip's pipeline on PIL frames to float precision; features of unnormalised,
    mean-only or std-only pixels are orders of magnitude further off."""
    from tmd_bench.metrics import clip

    scorer = clip.load_clip(CLIP_NAME, tiny_clip_weights)
    model, transform = open_clip_model_and_transform(tiny_clip_weights)
    # open_clip's own default for a config without a release: OpenAI's statistics (not the scorer's copy)
    import open_clip.constants as oc

    norm = transform.transforms[-1]
    assert tuple(norm.mean) == tuple(oc.OPENAI_DATASET_MEAN) and tuple(norm.std) == tuple(oc.OPENAI_DATASET_STD)

    videos = uint8_videos(2, 3, 32, 32, seed=1)
    ours = scorer.frame_features(videos)
    ref = reference_features(model, transform, videos)
    err = (ours - ref).abs().max().item()
    assert err < 1e-4, err
    for skipped in ("no", "mean", "std"):
        wrong = reference_features(model, transform, videos, normalise=skipped)
        gap = (wrong - ref).abs().max().item()
        assert gap > 0.01 and gap > 1000 * max(err, 1e-6), (skipped, gap, err)
        assert (ours - wrong).abs().max().item() > 0.01, skipped

    prompts = ["a red circle", "two blue squares"]
    torch.testing.assert_close(scorer.score(videos, prompts), reference_score(model, transform, videos, prompts),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize("h,w", [(48, 48), (40, 64)])
def test_clip_features_follow_open_clips_transform_with_a_releases_own_statistics(tiny_clip_weights, h, w):
    """A release with mean = std = 0.5 (as ViT-L-14 laion2b_s32b_b82k): open_clip's transform forced to those
    statistics, and our scorer built from that model (it reads the model's preprocess config). Frames that
    need a resize (and, non-square, a centre crop): PIL's and torch's bicubic differ slightly, so the tolerance
    is looser than above, yet far below what OpenAI's statistics or no normalisation would give."""
    from tmd_bench.metrics import clip

    half = dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    model, transform = open_clip_model_and_transform(tiny_clip_weights, **half)
    assert tuple(transform.transforms[-1].mean) == (0.5, 0.5, 0.5)
    import open_clip

    scorer = clip.CLIPScorer(model, open_clip.get_tokenizer(CLIP_NAME), CLIP_NAME, tiny_clip_weights, "x")
    assert scorer.preprocess["mean"] == (0.5, 0.5, 0.5) and scorer.preprocess["std"] == (0.5, 0.5, 0.5)
    videos = uint8_videos(2, 2, h, w, seed=h + w)
    ours = scorer.frame_features(videos)
    ref = reference_features(model, transform, videos)
    cos_err = (1 - (ours * ref).sum(-1)).max().item()
    assert cos_err < 2e-3, cos_err
    _, openai = open_clip_model_and_transform(tiny_clip_weights)  # the same model, OpenAI's statistics
    for wrong in (reference_features(model, openai, videos), reference_features(model, transform, videos, "no")):
        assert (1 - (ours * wrong).sum(-1)).max().item() > 10 * cos_err


# =============================================================================================
# 2. `data encode`: position and frame order of a known pattern survive

F_IN, H_S, W_S = 17, 24, 24  # source clips: 17 frames; the Shapes teacher keeps 8 frames of 24×24


def pattern(frames: int, h: int, w: int, corner: int) -> np.ndarray:
    """uint8 ``(F, H, W, 3)``: red = 20 + 12·f (frame index as brightness), green = a left→right ramp,
    blue = 0; frame 0 alone has a white ``corner × corner`` block at the top left."""
    v = np.zeros((frames, h, w, 3), np.uint8)
    v[..., 0] = (20 + 12 * np.arange(frames)).reshape(-1, 1, 1)
    v[..., 1] = np.round(10 + 230 * np.arange(w) / (w - 1)).astype(np.uint8).reshape(1, 1, -1)
    v[0, :corner, :corner] = 255
    return v


def write_mp4(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def check_pattern(clip: np.ndarray, stride: int, tol: float, name: str) -> None:
    """``clip``: uint8-scale float ``(3, 8, 24, 24)`` read back from the shards."""
    r, g = clip[0], clip[1]
    lum = clip.mean(0)
    # frame order: red (away from the corner) is 20 + 12·(stride·f) — the first frames, in order
    red = r[:, 8:, :].mean((1, 2))
    np.testing.assert_allclose(red, 20 + 12 * stride * np.arange(8), atol=tol, err_msg=f"{name}: frame order")
    # left → right: green rises along x in every frame (a mirrored clip falls), flat along y (not transposed)
    col = g[:, 8:, :].mean((0, 1))
    assert np.all(np.diff(col) > 2), f"{name}: green ramp not left→right: {col.round(1)}"
    assert col[-1] - col[0] > 150 and np.ptp(g[1:, :, 12].mean(0)) < tol + 2, name
    # the white corner: top-left of frame 0, not top-right, bottom-left nor any later frame
    tl, tr, bl = lum[0, :3, :3].mean(), lum[0, :3, -3:].mean(), lum[0, -3:, :3].mean()
    assert tl > 240 and tr < 120 and bl < 120, (name, tl, tr, bl)
    assert lum[1:, :3, :3].max() < 160 and lum[-1, :3, :3].mean() < tl - 100, name


@pytest.mark.parametrize("stride", [1, 2])
def test_data_encode_keeps_position_and_frame_order(shapes_teacher_dir, tmp_path, stride):
    """The Shapes teacher's latents are its pixels, so the shards show exactly where each pattern went.
    References: the source arrays themselves (exactly, for the lossless .safetensors tensor), and the
    pattern's own geometry for the resized .gif and the decoded .mp4."""
    from PIL import Image
    from safetensors.torch import save_file

    from tmd_bench import dataset

    vids = tmp_path / "videos"
    vids.mkdir()
    exact = pattern(F_IN, H_S, W_S, corner=4)
    save_file({"video": torch.from_numpy(exact)}, str(vids / "a.safetensors"))
    (vids / "a.txt").write_text("a small red circle")
    big = pattern(F_IN, 2 * H_S, 2 * W_S, corner=8)  # resized by half on the way in
    imgs = [Image.fromarray(f) for f in big]
    imgs[0].save(vids / "b.gif", save_all=True, append_images=imgs[1:], duration=125, loop=0)
    (vids / "b.txt").write_text("two blue squares")
    write_mp4(vids / "c.mp4", exact)
    (vids / "c.txt").write_text("a green triangle")

    out = tmp_path / "data"
    r = CliRunner().invoke(app, ["data", "encode", "--teacher", "shapes", "--teacher-path", str(shapes_teacher_dir),
                                 "--videos", str(vids), "--out", str(out), "--frame-stride", str(stride),
                                 "--device", "cpu", "--shard-size", "2"])
    assert r.exit_code == 0, r.output
    data = dataset.LatentDataset(out)
    prompts, latents, _ = data.rows([0, 1, 2])
    assert prompts == ["a small red circle", "two blue squares", "a green triangle"]
    assert latents.shape == (3, 3, 8, H_S, W_S)
    u8 = ((latents.float() + 1) * 127.5).numpy()

    # lossless tensor: the stored latents are the source's first 8 frames (every stride-th), channels
    # first, pixel for pixel — computed here from the numpy array, not by the toolkit's readers
    want = exact[::stride][:8].transpose(3, 0, 1, 2).astype(np.float32)
    np.testing.assert_allclose(u8[0], want, atol=1e-3)
    check_pattern(u8[0], stride, 1e-3, "a.safetensors")
    check_pattern(u8[1], stride, 3.0, "b.gif")
    check_pattern(u8[2], stride, 3.0, "c.mp4")


# =============================================================================================
# 3. The shipped students the demo evaluates

# the demo's docstring and the README: TMD, DMD2-v, rCM, KD, MeanFlow
METHODS = {"tmd", "dmd2", "rcm", "kd", "meanflow"}
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_student_entries() -> set[str]:
    """The plan entries behind the student rows of the README's status table (the demo's printed table):
    tmd-M2-N2H2 → tmd-M2, dmd2-s1 → dmd2-s1, rcm-s4 → rcm, kd-s1 → kd, meanflow-s2 → meanflow."""
    text = README.read_text()
    table = text[text.index("| config | NFE counted"):]
    table = table[: table.index("\n\n")]
    entries = set()
    for row in re.findall(r"^\| `([^`]+)` \|", table, flags=re.M):
        if row.startswith("teacher"):
            continue
        m = re.match(r"(tmd-M\d+|dmd2-s\d+)", row)
        entries.add(m.group(1) if m else row.split("-")[0])
    return entries


def test_the_package_ships_an_evaluable_student_for_every_method_the_demo_shows():
    """The demo skips silently what is not shipped ("the report shows the teacher only"), and the tests that
    compare against the shipped students pass on an empty set: here the set itself is checked."""
    from tmd_bench import harness, runtime
    from tmd_bench.compare import SHIPPED_STUDENTS, plan, student_evaluations
    from tmd_bench.evaluate import EvalConfig, resolve_method

    assert SHIPPED_STUDENTS.resolve() == (ASSETS / "students").resolve()
    names = {e.name: e for e in plan("shapes")}
    on_disk = {p.name for p in SHIPPED_STUDENTS.iterdir() if p.is_dir()}
    assert on_disk <= set(names), f"shipped folders that are no plan entry: {on_disk - set(names)}"
    expected = readme_student_entries()
    assert expected and expected <= set(names), expected
    assert expected <= on_disk, f"the README's table shows students that are not shipped: {expected - on_disk}"
    # exactly as the demo builds it
    shipped = {e.name: SHIPPED_STUDENTS / e.name for e in plan("shapes") if (SHIPPED_STUDENTS / e.name).is_dir()}
    assert {names[n].method for n in shipped} == METHODS

    evals = student_evaluations(shipped)
    assert evals, "student_evaluations(shipped) is empty: the demo would show the teacher alone"
    assert {ev[0][0] for ev in evals} == METHODS
    for name, root in shipped.items():  # every shipped entry is evaluated, from inside its own folder
        used = [Path(c) for ev in evals for c in ev[2].values() if root in Path(c).parents]
        assert used, f"{name}: shipped but no evaluation reads it (wrong folder layout?)"
        prov = json.loads((root / "provenance.json").read_text())
        assert prov["entry"] == name and prov["method"] == names[name].method, prov
        assert f"--only {name}" in prov["command"] and prov["teacher_sha256"], prov
        for folder in used:
            assert any((folder / f).is_file() for f in ("tmd_config.json", "student_config.json")), folder
            w = list(folder.rglob("*.safetensors"))
            assert w and all(p.stat().st_size > 1000 for p in w), folder
            assert not [p for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]

    # each evaluation loads against the shipped teacher and samples a finite clip at its first step count
    teacher = runtime.load("shapes", None, "cpu", None)
    text = teacher.encode_text(["a small red circle moving left on a black background"])
    negative = teacher.encode_text([teacher.spec.negative_prompt])
    for methods, steps, ckpts, extra in evals:
        cfg = EvalConfig(methods=methods, steps=steps, checkpoints=ckpts,
                         inner_steps=extra.get("inner_steps"))
        method = resolve_method(teacher, cfg, methods[0])
        with torch.no_grad():
            x = method.sample(harness.noise_for_seeds(teacher, [0]), text, negative, steps[0], [0])
        assert x.shape == teacher.latent_shape(1) and torch.isfinite(x.float()).all(), (methods, ckpts)


# =============================================================================================
# 4. CLI commands run end to end


def test_teacher_list_prints_every_known_teacher_and_its_source():
    from tmd_bench.registry import TEACHERS

    r = CliRunner().invoke(app, ["teacher", "list"])
    assert r.exit_code == 0, r.output
    assert {"shapes", "wan2.1-1.3b", "wan2.1-14b"} <= set(TEACHERS)
    for name, spec in TEACHERS.items():
        assert re.search(rf"(^|\W){re.escape(name)}(\W|$)", r.output), name
        assert (spec.repo_id or "shipped with tmd-bench") in r.output, name
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in r.output and "Wan-AI/Wan2.1-T2V-14B-Diffusers" in r.output


# (row_id, method, effective_nfe, latency_total_s, all_correct): on the front of quality against latency are
# s1 (fastest), tmd (better than s2 and faster than s50) and s50 (best); s2 and s4 are dominated by tmd
ROWS = [("teacher-euler-s1", "teacher-euler", 1.0, 0.03, 0.21),
        ("teacher-euler-s2", "teacher-euler", 2.0, 0.05, 0.11),
        ("teacher-euler-s4", "teacher-euler", 4.0, 0.10, 0.70), ("teacher-euler-s50", "teacher-euler", 50.0, 1.40, 0.96),
        ("tmd-M2-N2H2", "tmd", 2.5, 0.06, 0.89)]


def test_report_command_writes_csv_and_html_and_prints_their_paths(tmp_path):
    import pandas as pd

    run = tmp_path / "run-a"
    (run / "cards").mkdir(parents=True)
    rows = [{"row_id": r, "method": m, "steps": int(r.rsplit("s", 1)[-1]) if m == "teacher-euler" else 2,
             "nfe": e, "nfe_counted": e, "effective_nfe": e, "latency_total_s": lat, "teacher": "shapes",
             "suite": "shapes-eval", "all_correct": q, "run_card": f"cards/{r}.json"} for r, m, e, lat, q in ROWS]
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    for r in rows:
        (run / r["run_card"]).write_text(json.dumps({"row_id": r["row_id"]}))
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    html_path, csv_path = out / "report.html", out / "report.csv"
    printed = " ".join(res.output.split())  # rich may wrap long paths
    assert f"report: {html_path}" in printed and f"table: {csv_path}" in printed, res.output
    df = pd.read_csv(csv_path)
    assert list(df["row_id"]) == [r[0] for r in ROWS] and set(df["run"]) == {"run-a"}
    front = dict(zip(df["row_id"], df["pareto_latency"]))
    assert front == {"teacher-euler-s1": True, "teacher-euler-s2": False, "teacher-euler-s4": False,
                     "teacher-euler-s50": True, "tmd-M2-N2H2": True}
    for card in df["run_card"]:  # relative to the report, pointing at the run's own cards
        assert (out / card).resolve() == (run / "cards" / Path(card).name).resolve()
    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "svg" in html and "all_correct" in html
    for r in ROWS:
        assert r[0] in html


def test_bench_tmd_on_the_tiny_shapes_teacher_prints_finite_positive_figures(shapes_teacher_dir):
    r = CliRunner().invoke(app, ["bench", "tmd", "--teacher", "shapes", "--teacher-path", str(shapes_teacher_dir),
                                 "--device", "cpu", "--batch-size", "1", "--repeats", "1", "--warmup", "0"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "M2-N2H2" in text and "(L = 4)" in text, r.output
    for label in ("stage-2 student update, rollout N", "stage-2 student update, no rollout (N = 1)",
                  "teacher forward (no CFG), wall / FLOPs", "TMD sampler denoising, wall / FLOPs"):
        assert label in text, (label, r.output)
    times = [float(v) for v in re.findall(r"(\S+) ms", text)]
    flops = [float(v) for v in re.findall(r"(\S+) GFLOP", text)]
    assert len(times) >= 4 and len(flops) >= 2, r.output
    assert all(math.isfinite(v) and v > 0 for v in times + flops), (times, flops)
    pcts = [float(v) for v in re.findall(r"([+-]\d+(?:\.\d+)?)%", text)]
    assert len(pcts) >= 6 and all(math.isfinite(v) for v in pcts), r.output
    assert "nan" not in text.lower() and "inf " not in text.lower()
    # the rollout runs N = 2 head passes where the no-rollout update runs 1: more FLOPs, not fewer
    rollout = re.search(r"rollout extra cost, wall / FLOPs\W*([+-][\d.]+)% / ([+-][\d.]+)%", text)
    assert rollout and float(rollout.group(2)) > 0, r.output
    # effective NFE by hand: M·((L − H) + N·H)/L = 2·(2 + 2·2)/4 = 3 for M2-N2H2 on the 4-block teacher, and the
    # printed FLOP overhead is the printed sampler FLOPs over 3 × the printed forward FLOPs
    fwd = float(re.search(r"teacher forward \(no CFG\), wall / FLOPs\W*\S+ ms / (\S+) GFLOP", text).group(1))
    smp = re.search(r"TMD sampler denoising, wall / FLOPs\W*\S+ ms / (\S+) GFLOP at effective NFE (\S+)", text)
    assert float(smp.group(2)) == pytest.approx(3.0)
    over = float(re.search(r"sampler overhead vs eff\. NFE × forward, wall / FLOPs\W*[+-][\d.]+% / ([+-][\d.]+)%",
                           text).group(1))
    assert over == pytest.approx(100 * (float(smp.group(1)) / (3 * fwd) - 1), abs=0.5)


def test_teacher_train_without_and_with_export_redirected(tmp_path, monkeypatch, assets_guard):
    from tmd_bench import teachers
    from tmd_bench.teachers import load_teacher

    shipped = teachers.SHAPES_TEACHER_DIR
    assert shipped.resolve() == (ASSETS / "shapes-teacher").resolve()
    shipped_before = tree_digest(shipped)
    args = ["teacher", "train", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1", "--device", "cpu"]

    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    assert "trained to step 2" in r.output and "installed" not in r.output
    t = load_teacher("shapes", tmp_path / "plain" / "teacher")
    assert t.meta["train"]["steps"] == 2 and t.num_blocks >= 1
    log = (tmp_path / "plain" / "log.csv").read_text().strip().splitlines()
    assert log[0].startswith("step,loss") and log[-1].split(",")[0] == "2"  # logged at the last step

    dest = tmp_path / "installed-teacher"
    (dest / "stale").mkdir(parents=True)  # whatever was installed before is replaced, not merged
    (dest / "stale" / "old.txt").write_text("old")
    monkeypatch.setattr(teachers, "SHAPES_TEACHER_DIR", dest)
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "exp"), "--export"])
    assert r.exit_code == 0, r.output
    assert "installed as the shipped shapes teacher" in r.output and str(dest) in " ".join(r.output.split())
    assert not (dest / "stale").exists()
    exported = load_teacher("shapes", dest)
    trained = load_teacher("shapes", tmp_path / "exp" / "teacher")
    for (k, a), (_, b) in zip(exported.transformer.state_dict().items(), trained.transformer.state_dict().items()):
        assert torch.equal(a, b), k
    assert (dest / "training_log.csv").read_bytes() == (tmp_path / "exp" / "log.csv").read_bytes()
    assert tree_digest(shipped) == shipped_before


def test_metrics_train_shapes_clip_smallest_run_writes_a_loadable_model(tmp_path, assets_guard):
    from tmd_bench.metrics import shapes_clip as sc
    from tmd_bench.metrics.clip import file_hash

    out = tmp_path / "sc"
    r = CliRunner().invoke(app, ["metrics", "train-shapes-clip", "--out", str(out), "--steps", "2",
                                 "--batch-size", "4", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "Shapes-CLIP trained: 2 steps" in r.output and "installed" not in r.output
    for name in (sc.WEIGHTS, sc.CONFIG, sc.RECORD, "log.csv"):
        assert (out / name).is_file(), name
    record = json.loads((out / sc.RECORD).read_text())
    assert record["steps"] == 2 and record["train"]["batch_size"] == 4 and record["train"]["seed"] == 3
    assert record["model_sha256"] == file_hash(out / sc.WEIGHTS)
    assert math.isfinite(record["final_loss_last100"]) and record["final_loss_last100"] > 0
    acc = record["zero_shot_accuracy"]
    assert acc and all(0 <= v <= 1 for v in acc.values()) and "all_static" in acc
    log = (out / "log.csv").read_text().strip().splitlines()
    assert log[0] == "step,loss,logit_scale_exp" and [ln.split(",")[0] for ln in log[1:]] == ["0", "1"]
    scorer = sc.load_shapes_clip(out)
    from tmd_bench import world

    clips = world.render_prompts(["a small red circle moving left on a black background"], [0])
    s = scorer.score(clips, ["a small red circle moving left on a black background"])
    assert s.shape == (1,) and torch.isfinite(s).all()
    assert (out / sc.WEIGHTS).read_bytes() != (sc.ASSET_DIR / sc.WEIGHTS).read_bytes()
