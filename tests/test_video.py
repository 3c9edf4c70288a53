"""Clips as H.264 MP4 (tmd_bench.video): round trip within a stated tolerance, what an independent
reader sees, the evaluate run's preview files and run card, VBench export, and the GIF fallback.

Tolerances are in [−1, 1] units (one uint8 level = 2/255); the measured values they bound are in
tmd_bench/video.py's docstring."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tmd_bench import video, world
from tmd_bench.cli import app
from tmd_bench.metrics import vbench_bridge

needs_mp4 = pytest.mark.skipif(not video.mp4_available(), reason=video.mp4_unavailable_reason())
LEVEL = 2 / 255
TOL = video.ROUND_TRIP_TOLERANCE


def smooth_clip(frames=8, h=24, w=24):
    """Gradients in R and G, a slowly drifting sinusoid in B: no edges."""
    f, y, x = torch.meshgrid(torch.arange(frames) / frames, torch.linspace(0, 1, h), torch.linspace(0, 1, w),
                             indexing="ij")
    return torch.stack([x, y, 0.5 + 0.25 * torch.sin(2 * math.pi * (x + f))]) * 2 - 1


def square_clip(frames=8, h=24, w=24):
    """A saturated red square moving diagonally over the smooth clip: hard colour edges."""
    clip = (smooth_clip(frames, h, w) + 1) / 2
    s = h // 4
    for i in range(frames):
        r, c = (2 * i) % (h - s), (3 * i) % (w - s)
        clip[:, i, r:r + s, c:c + s] = torch.tensor([1.0, 0.1, 0.1]).view(3, 1, 1)
    return clip * 2 - 1


def shapes_clip():
    return world.render_prompts(["a small red circle moving left on a black background"], [3])[0]


def quantised(clip):
    """The clip as uint8 RGB sees it (write_mp4's first step), back in [−1, 1]."""
    return video.from_uint8(video.to_uint8(clip))


def errors(a, b):
    e = (a - b).abs()
    return e.mean().item(), e.max().item()


@needs_mp4
@pytest.mark.parametrize("make,mean_tol,max_tol", [
    (smooth_clip, TOL["smooth_mean"], TOL["smooth_max"]),
    (square_clip, TOL["edges_mean"], None),
    (shapes_clip, TOL["edges_mean"], None),
])
def test_round_trip_is_within_the_stated_tolerance(make, mean_tol, max_tol, tmp_path):
    clip = make()
    path = video.write_mp4(tmp_path / "c.mp4", clip, fps=8)
    back, fps = video.read_mp4(path)
    assert back.shape == clip.shape and back.dtype == torch.float32 and fps == 8
    assert back.min() >= -1 and back.max() <= 1
    mean, mx = errors(back, clip)
    assert mean <= mean_tol, f"mean |err| {mean / LEVEL:.2f} levels"
    if max_tol is not None:
        assert mx <= max_tol, f"max |err| {mx / LEVEL:.1f} levels"
    # luma is only touched by the codec: the mean of each frame (a luma-weighted quantity) survives
    assert (back.mean(dim=(0, 2, 3)) - clip.mean(dim=(0, 2, 3))).abs().max() <= 3 * LEVEL


@needs_mp4
def test_larger_clip_and_fps_and_frame_count_are_kept(tmp_path):
    clip = square_clip(frames=16, h=64, w=64)
    back, fps = video.read_mp4(video.write_mp4(tmp_path / "c.mp4", clip, fps=16))
    assert back.shape == (3, 16, 64, 64) and fps == 16
    assert errors(back, clip)[0] <= 2.5 * LEVEL  # measured ≈ 1.6 levels
    for frames, rate in ((1, 8), (5, 30), (3, 12.5)):
        back, fps = video.read_mp4(video.write_mp4(tmp_path / f"{frames}.mp4", smooth_clip(frames), fps=rate))
        assert back.shape[1] == frames and fps == pytest.approx(rate)


@needs_mp4
def test_an_independent_reader_sees_h264_yuv420p_at_the_frame_rate(tmp_path):
    import av
    clip = square_clip()
    path = video.write_mp4(tmp_path / "c.mp4", clip, fps=8)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert s.codec_context.profile == "High"  # what browsers and VBench's decoders play
        assert (s.width, s.height, s.average_rate) == (24, 24, 8)
        frames = list(c.decode(s))
        assert frames[0].colorspace == 1 and frames[0].color_range == 1  # tagged BT.709, limited range
        rgb = np.stack([f.to_ndarray(format="rgb24") for f in frames])  # swscale's own conversion
    assert rgb.shape == (8, 24, 24, 3)
    mean, _ = errors(video.from_uint8(rgb), clip)
    assert mean <= 2 * TOL["edges_mean"], f"{mean / LEVEL:.2f} levels"  # cruder chroma upsampling, same picture


@needs_mp4
def test_odd_sizes_are_padded_and_cropped_back(tmp_path):
    import av
    clip = smooth_clip(4, 23, 25)
    path = video.write_mp4(tmp_path / "odd.mp4", clip, fps=8)
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (26, 24)  # yuv420p needs even sizes
    back, _ = video.read_mp4(path)
    assert back.shape == (3, 4, 23, 25)
    mean, mx = errors(back, clip)
    assert mean <= TOL["smooth_mean"] and mx <= TOL["smooth_max"]


@needs_mp4
def test_writing_is_atomic_and_checks_its_input(tmp_path):
    target = tmp_path / "c.mp4"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match=r"\(3, frames, height, width\)"):
        video.write_mp4(target, torch.zeros(4, 2, 8, 8), fps=8)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        video.write_mp4(target, smooth_clip(2), fps=0)
    with pytest.raises(ValueError, match="crf"):
        video.write_mp4(target, smooth_clip(2), fps=8, crf=99)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]
    video.write_mp4(target, smooth_clip(2), fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]  # no temporary file left behind
    nan = smooth_clip(2)
    nan[0, 0, 0, 0] = float("nan")
    assert video.read_mp4(video.write_mp4(tmp_path / "n.mp4", nan, fps=8))[0].isfinite().all()


def test_video_format_describes_the_files():
    assert {k: video.VIDEO_FORMAT[k] for k in ("format", "codec", "pix_fmt")} == {
        "format": "mp4", "codec": "h264", "pix_fmt": "yuv420p"}
    assert 10 <= video.VIDEO_FORMAT["crf"] <= 17 and video.VIDEO_FORMAT["crf"] == video.CRF


def test_safe_names_stay_in_their_folder():
    assert video.safe_name("teacher-euler-s1") == "teacher-euler-s1"
    for bad in ("../../etc", "a/b", "..", ".hidden", "x" * 300, "", "a\x00b", "é"):
        name = video.safe_name(bad)
        assert name and "/" not in name and not name.startswith(".") and len(name) <= 100
    assert video.safe_name("a/b") != video.safe_name("a_b")


@needs_mp4
def test_evaluate_writes_mp4_previews_and_the_run_card_fields(shapes_teacher_dir, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [str(a) for a in (
        "evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-euler", "--steps", "2",
        "--limit", "3", "--preview", "2", "--latency-repeats", "1", "--metrics", "shapes", "--out", out)])
    assert r.exit_code == 0, r.output
    card = json.loads((out / "cards" / "teacher-euler-s2.json").read_text())
    vf = card["video_files"]
    assert {k: vf[k] for k in ("format", "codec", "crf", "pix_fmt", "fps")} == {
        "format": "mp4", "codec": "h264", "crf": video.CRF, "pix_fmt": "yuv420p", "fps": card["video"]["fps"]}
    assert vf["files"] == ["samples/teacher-euler-s2/0.mp4", "samples/teacher-euler-s2/1.mp4"]
    preview = load_file(str(out / "samples" / "teacher-euler-s2.safetensors"))["videos"]  # still written
    assert preview.shape[0] == 2
    for k, rel in enumerate(vf["files"]):
        back, fps = video.read_mp4(out / rel)
        assert fps == card["video"]["fps"] == 8 and back.shape == preview[k].shape
        # the file is exactly the preview clip's encoding ...
        assert torch.equal(back, video.read_mp4(video.write_mp4(tmp_path / "again.mp4", preview[k], fps=8))[0])
        # ... and the tiny teacher is untrained: its clips are i.i.d. noise, the worst case for 4:2:0 and
        # any lossy codec (per pixel ≈ 62 levels off), so the tolerance is on what survives: frame means
        # per channel (measured ≤ 2.3 levels) and 8×8 block means (measured ≈ 1.8 levels on average)
        x = preview[k].clamp(-1, 1)
        assert (back.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs().max() <= 4 * LEVEL
        pooled = torch.nn.functional.avg_pool2d
        assert errors(pooled(back.transpose(0, 1), 8), pooled(x.transpose(0, 1), 8))[0] <= 3 * LEVEL


def test_evaluate_falls_back_to_gif(shapes_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "mp4_available", lambda: False)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [str(a) for a in (
        "evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-euler", "--steps", "1",
        "--limit", "2", "--latency-repeats", "1", "--metrics", "shapes", "--out", out)])
    assert r.exit_code == 0, r.output
    vf = json.loads((out / "cards" / "teacher-euler-s1.json").read_text())["video_files"]
    assert vf["format"] == "gif" and "GIF" in vf["note"] and vf["fps"] == 8
    assert vf["files"] == ["samples/teacher-euler-s1/0.gif", "samples/teacher-euler-s1/1.gif"]
    with Image.open(out / vf["files"][0]) as gif:
        assert gif.n_frames == 8 and gif.size == (24, 24)


def test_previews_replace_an_earlier_runs_files_and_refuse_links(tmp_path):
    plan = video.preview_files("../x", 1, 8)
    assert plan["folder"].startswith("samples/") and ".." not in plan["folder"]
    (tmp_path / "samples").mkdir()
    folder = tmp_path / plan["folder"]
    folder.mkdir()
    (folder / "3.gif").write_bytes(b"stale")
    (folder / "notes.txt").write_text("keep")
    written = video.write_previews(tmp_path, plan, smooth_clip(2)[None])
    assert [p.name for p in written] == [Path(plan["files"][0]).name]
    assert sorted(p.name for p in folder.iterdir()) == sorted([written[0].name, "notes.txt"])
    link_plan = video.preview_files("linked", 1, 8)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / link_plan["folder"]).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="not a link"):
        video.write_previews(tmp_path, link_plan, smooth_clip(2)[None])
    assert not any((tmp_path / "elsewhere").iterdir())
    assert video.preview_files("r", 0, 8)["format"] == "none"


def structured_run(folder, prompts=("a small red circle moving left on a black background",
                                    "a small red circle moving left on a black background")):
    (folder / "samples").mkdir(parents=True)
    videos = torch.stack([shapes_clip(), square_clip()][:len(prompts)])
    save_file({"videos": videos.contiguous()}, str(folder / "samples" / "teacher-euler-s1.safetensors"),
              metadata={"prompts": json.dumps(list(prompts)), "seeds": json.dumps(list(range(len(prompts))))})
    return folder, videos


@needs_mp4
def test_vbench_export_writes_mp4_that_reads_back(tmp_path):
    run, videos = structured_run(tmp_path / "run")
    summary = vbench_bridge.export_videos(run, tmp_path / "vb", fps=8)
    assert summary["format"] == "mp4" and summary["files"] == 2
    assert not any("GIF" in n for n in summary["notes"])
    manifest = json.loads((tmp_path / "vb" / vbench_bridge.MANIFEST).read_text())
    assert manifest["video_format"]["codec"] == "h264" and manifest["fps"] == 8
    for k, entry in enumerate(manifest["videos"]):
        assert entry["file"].endswith(f"-{k}.mp4")
        back, fps = video.read_mp4(tmp_path / "vb" / entry["file"])
        assert fps == 8 and back.shape == videos[k].shape
        assert errors(back, videos[k])[0] <= TOL["edges_mean"]


def test_vbench_export_falls_back_to_gif(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "mp4_available", lambda: False)
    run, videos = structured_run(tmp_path / "run")
    r = CliRunner().invoke(app, ["vbench", "export", str(run), "--out", str(tmp_path / "vb")])
    assert r.exit_code == 0, r.output
    assert "2 gif videos" in r.output and "GIF" in r.output
    names = sorted(p.name for p in (tmp_path / "vb").iterdir() if p.suffix == ".gif")
    assert names == ["a small red circle moving left on a black background-0.gif",
                     "a small red circle moving left on a black background-1.gif"]
    with Image.open(tmp_path / "vb" / names[0]) as gif:
        assert gif.n_frames == videos.shape[2] and gif.info["duration"] in (120, 130)  # 125 ms in GIF's 1/100 s
