"""Clips as files: H.264 MP4 through PyAV, GIF as the fallback.

A clip is the harness's ``(3, F, H, W)`` tensor (or array) in [−1, 1]. :func:`write_mp4` turns it
into uint8 RGB (``round((x + 1) · 127.5)``), then into 8-bit Y′CbCr 4:2:0 and encodes it with
libx264; :func:`read_mp4` decodes it back to ``(3, F, H, W)`` in [−1, 1] and its frame rate.

What the files are (:data:`VIDEO_FORMAT`, recorded in run cards):

- **H.264 (libx264), yuv420p, in MP4**: the pixel format and profile (High) that browsers, players
  and FFmpeg-based readers (decord, torchvision, OpenCV, which VBench's loaders use) all decode. No lossless mode: x264's lossless
  (``crf 0``) needs the High 4:4:4 Predictive profile, which browsers do not play.
- **CRF 12, preset medium**: x264's constant-quality mode. CRF 17–18 is the usual "visually
  lossless" point; 12 sits well below it, so the codec's own error is small next to what 4:2:0
  chroma subsampling costs on saturated edges (on the test clips below, 12 → 17 raises the mean
  round-trip error by ≈ 0.45 of a level, 10 → 12 by ≈ 0.15), and files stay small (a 24×24
  8-frame clip is 2–3 kB, 16×64×64 is 7 kB). ``medium`` is x264's default speed/size trade-off;
  ``slow`` gave the same error here.
- **Colour: BT.709 matrix, limited ("TV") range, tagged in the stream** (colour space, primaries,
  transfer, range), so other readers convert with the same matrix. The RGB ↔ Y′CbCr conversion is
  done here in NumPy, not by swscale, so it is the same with every PyAV/FFmpeg build and written
  down: chroma is the 2×2 box average of the full-resolution Cb/Cr (signalled as centre chroma
  siting, ``chromaloc=1``) and is read back with centre-sited bilinear interpolation (edges
  clamped). swscale's default RGB ↔ yuv420p conversion both ways gave 1.4× (Shapes) to 3.8×
  (smooth) the error of this one on the test clips, before any encoding.
- **Even sizes**: yuv420p needs even width and height. An odd-sized clip is padded by repeating
  its last column/row; the true size is stored in the container's ``comment`` tag
  (``tmd-bench crop=WxH``) and :func:`read_mp4` crops back to it. Other readers see the one extra
  (replicated) column/row. Harness clips are even (Shapes 24×24; Wan sizes are multiples of 16).
- **Atomic**: written to a temporary file in the destination folder, then ``os.replace``-d, so a
  crash never leaves a half-written clip under the final name.

Round trip (:func:`write_mp4` then :func:`read_mp4`, defaults), measured on the clips of
``tests/test_video.py`` against the float clip; errors in uint8 levels (1 level = 2/255 in [−1, 1]
units; the uint8 step alone contributes up to 0.5):

=========================================================  ==========  =========  ==============
clip                                                       mean |err|  max |err|  4:2:0 alone
=========================================================  ==========  =========  ==============
smooth: gradients + drifting sinusoid, 8×24×24             1.66        15         1.20
moving saturated square over gradients, 8×24×24            4.05        169        3.50
Shapes-world clip (red circle on black), 8×24×24           2.28        66         2.08
moving square over gradients, 16×64×64                     1.73        127        1.38
smooth, odd size 4×23×25 (padded, cropped back)            1.53        16         —
i.i.d. noise (the untrained test teacher's clips), 8×24²   ≈ 62        255        —
=========================================================  ==========  =========  ==============

"4:2:0 alone" is the same conversion without the codec: most of the error is chroma
subsampling — one Cb/Cr sample per 2×2 block blurs colour across saturated edges, which at 24×24
is a large share of the pixels (hence the large maxima; luma is only touched by the codec, so
frame means survive within ≈ 2 levels even for noise). CRF 10 / 15 / 17 give 3.90 / 4.24 / 4.50
(square) and 1.52 / 1.83 / 2.07 (smooth). Readers that use swscale's default conversion (e.g.
PyAV's ``to_ndarray(format="rgb24")``) upsample chroma more crudely: 4.4 (smooth), 5.3 (square).
:data:`ROUND_TRIP_TOLERANCE` holds the bounds the tests assert.

Without PyAV, or with a PyAV build that lacks libx264, :func:`mp4_available` is false and callers
write GIF (:func:`write_gif`, Pillow: 256-colour palette, centisecond frame times) and say so.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

CRF = 12
PRESET = "medium"
PIX_FMT = "yuv420p"
ENCODER = "libx264"

VIDEO_FORMAT = {
    "format": "mp4", "codec": "h264", "encoder": ENCODER, "profile": "High", "crf": CRF, "preset": PRESET,
    "pix_fmt": PIX_FMT, "colorspace": "bt709", "color_range": "limited (tv)", "chroma": "2x2 box average, centre-sited",
    "rgb": "uint8 = round((x + 1) * 127.5) of the clip in [-1, 1]",
}
GIF_FORMAT = {"format": "gif", "codec": "gif", "encoder": "Pillow", "palette": "256 colours per frame",
              "frame_time": "1/100 s units"}

# Bounds the round-trip tests assert, in [−1, 1] units (2/255 = one uint8 level), for the defaults.
ROUND_TRIP_TOLERANCE = {
    "smooth_mean": 2 * 2 / 255,     # measured 1.66 levels (1.53 odd-sized)
    "smooth_max": 20 * 2 / 255,     # measured 15–16 levels
    "edges_mean": 5 * 2 / 255,      # saturated edges at 24×24: measured 2.3 (Shapes) – 4.05 (square) levels
}

# Y′CbCr matrices: (Kr, Kb).
_MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}
_CROP_TAG = re.compile(r"tmd-bench crop=(\d+)x(\d+)")
_AVCOL_BT709, _AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG = 1, 1, 2
_AVCOL_SPC_601 = (5, 6)  # BT470BG, SMPTE170M


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    """``None`` when MP4 can be written, else why not (one line)."""
    try:
        import av
    except ImportError:
        return "PyAV is not installed (pip install av)"
    try:
        av.codec.Codec(ENCODER, "w")
    except Exception as e:  # av.codec.codec.UnknownCodecError, or a broken build
        return f"PyAV {getattr(av, '__version__', '?')} has no {ENCODER} H.264 encoder ({type(e).__name__})"
    return None


def mp4_available() -> bool:
    """PyAV is importable and has the libx264 encoder."""
    return _probe() is None


def mp4_unavailable_reason() -> str:
    """Why :func:`mp4_available` is false (a generic line when it was forced false)."""
    return _probe() or "MP4 writing is unavailable"


def to_uint8(clip) -> np.ndarray:
    """``(3, F, H, W)`` in [−1, 1] (tensor or array) → ``(F, H, W, 3)`` uint8 RGB; NaN → 0 (mid grey)."""
    if hasattr(clip, "detach"):
        clip = clip.detach().float().cpu().numpy()
    a = np.asarray(clip, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] != 3 or min(a.shape) < 1:
        raise ValueError(f"a clip is (3, frames, height, width), got shape {tuple(a.shape)}")
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(((a.transpose(1, 2, 3, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8))


def from_uint8(frames: np.ndarray):
    """``(F, H, W, 3)`` uint8 → ``(3, F, H, W)`` float32 tensor in [−1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2))).float() / 127.5 - 1


def _rgb_to_yuv420(frames: np.ndarray, matrix: str = "bt709") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB ``(F, H, W, 3)``, H and W even → limited-range Y ``(F, H, W)``, Cb, Cr ``(F, H/2, W/2)``."""
    kr, kb = _MATRICES[matrix]
    x = frames.astype(np.float32) / 255
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    f, h, w = y.shape
    cb = ((b - y) / (2 * (1 - kb))).reshape(f, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    cr = ((r - y) / (2 * (1 - kr))).reshape(f, h // 2, 2, w // 2, 2).mean(axis=(2, 4))

    def q(v, lo, scale):
        return np.clip(np.round(lo + scale * v), 0, 255).astype(np.uint8)

    return q(y, 16, 219), q(cb, 128, 224), q(cr, 128, 224)


def _upsample2(c: np.ndarray) -> np.ndarray:
    """Centre-sited bilinear 2× upsampling of ``(F, h, w)`` along both spatial axes, edges clamped."""
    for axis in (1, 2):
        n = c.shape[axis]
        pos = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        shape = [1, 1, 1]
        shape[axis] = -1
        t = (pos - i0).astype(np.float32).reshape(shape)
        c = np.take(c, i0, axis=axis) * (1 - t) + np.take(c, i1, axis=axis) * t
    return c


def _yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, matrix: str = "bt709",
                   full_range: bool = False) -> np.ndarray:
    kr, kb = _MATRICES[matrix]
    y0, ys, cs = (0, 255, 255) if full_range else (16, 219, 224)
    yf = (y.astype(np.float32) - y0) / ys
    cbf, crf = (cb.astype(np.float32) - 128) / cs, (cr.astype(np.float32) - 128) / cs
    cbf, crf = (_upsample2(c)[:, :y.shape[1], :y.shape[2]] for c in (cbf, crf))  # odd sizes: ceil(n/2) samples
    r = yf + 2 * (1 - kr) * crf
    b = yf + 2 * (1 - kb) * cbf
    g = (yf - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.round(np.stack([r, g, b], axis=-1) * 255), 0, 255).astype(np.uint8)


def _rate(fps) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if rate <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return rate


def _atomic(path: Path, write) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:40]}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_mp4(path: str | Path, clip, fps: float = 8, crf: int = CRF, preset: str = PRESET) -> Path:
    """Write ``clip`` (``(3, F, H, W)`` in [−1, 1]) as H.264/yuv420p MP4 at ``fps`` frames per second.

    Odd sizes are padded (last column/row repeated) and cropped back by :func:`read_mp4`."""
    if _probe() is not None:
        raise RuntimeError(f"cannot write {path}: {_probe()} (write_gif is the fallback)")
    import av

    rate = _rate(fps)
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be 0–51 (x264), got {crf}")
    frames = to_uint8(clip)
    n, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")

    def write(tmp):
        with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            if (ph, pw) != (h, w):
                out.metadata["comment"] = f"tmd-bench crop={w}x{h}"
            stream = out.add_stream(ENCODER, rate=rate)
            stream.width, stream.height, stream.pix_fmt = pw, ph, PIX_FMT
            stream.options = {"crf": str(int(crf)), "preset": preset, "x264-params": "chromaloc=1"}
            cc = stream.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = _AVCOL_BT709
            cc.color_range = _AVCOL_RANGE_MPEG
            for i in range(n):  # one frame at a time: a 81×480×832 clip never needs float copies of all of it
                frame = av.VideoFrame(pw, ph, PIX_FMT)
                for plane, data in zip(frame.planes, (p[0] for p in _rgb_to_yuv420(frames[i:i + 1]))):
                    rows = np.zeros((data.shape[0], plane.line_size), np.uint8)
                    rows[:, :data.shape[1]] = data
                    plane.update(rows)
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)

    return _atomic(Path(path), write)


def _plane(p) -> np.ndarray:
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:p.height, :p.width]


def read_mp4(path: str | Path):
    """``(clip, fps)``: the video's frames as ``(3, F, H, W)`` float32 in [−1, 1] (a torch tensor) and its
    frame rate. yuv420p frames are converted as :func:`write_mp4` wrote them (BT.601 if the stream is
    tagged so, full range if tagged so); other pixel formats through PyAV's RGB conversion."""
    try:
        import av
    except ImportError:
        raise RuntimeError(f"reading {path} needs PyAV (pip install av), which is not installed") from None

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        crop = _CROP_TAG.search(container.metadata.get("comment", ""))
        rgb = []
        for frame in container.decode(stream):
            if frame.format.name in ("yuv420p", "yuvj420p"):
                matrix = "bt601" if frame.colorspace in _AVCOL_SPC_601 else "bt709"
                full = frame.format.name == "yuvj420p" or frame.color_range == _AVCOL_RANGE_JPEG
                y, cb, cr = (_plane(p)[None] for p in frame.planes[:3])
                rgb.append(_yuv420_to_rgb(y, cb, cr, matrix, full)[0])
            else:
                rgb.append(frame.to_ndarray(format="rgb24"))
    if not rgb:
        raise ValueError(f"{path}: the video has no frames")
    frames = np.stack(rgb)
    if crop:
        w, h = int(crop.group(1)), int(crop.group(2))
        frames = frames[:, :h, :w]
    return from_uint8(frames), float(rate) if rate else float("nan")


def write_gif(path: str | Path, clip, fps: float = 8) -> Path:
    """The GIF fallback (Pillow): frame time ``round(1000 / fps)`` ms, which GIF stores in 1/100 s."""
    from PIL import Image

    rate = _rate(fps)
    images = [Image.fromarray(f) for f in to_uint8(clip)]

    def write(tmp):
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=round(1000 / float(rate)), loop=0)

    return _atomic(Path(path), write)


def write_clip(path_stem: str | Path, clip, fps: float = 8) -> Path:
    """``path_stem`` + ``.mp4`` when :func:`mp4_available`, else ``.gif``; returns the path written."""
    stem = Path(path_stem)
    if mp4_available():
        return write_mp4(stem.with_name(stem.name + ".mp4"), clip, fps)
    return write_gif(stem.with_name(stem.name + ".gif"), clip, fps)


def safe_name(name: str, limit: int = 100) -> str:
    """A file/folder name for ``name`` that cannot leave its folder: characters outside
    ``[A-Za-z0-9._+-]`` become ``_``, no leading dot, at most ``limit`` characters; when anything
    had to change, a short hash of the original keeps distinct names distinct."""
    clean = re.sub(r"[^A-Za-z0-9._+-]", "_", str(name))
    if clean.startswith("."):
        clean = "_" + clean[1:]
    if clean == str(name) and 0 < len(clean) <= limit:
        return clean
    digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[:limit - 9]}-{digest}" if clean else digest


def preview_files(row_id: str, count: int, fps: float) -> dict:
    """The run card's ``video_files`` entry for a row's ``count`` preview clips: format, codec settings,
    fps and the files (``samples/<row>/<k>.mp4``, paths relative to the run folder) that
    :func:`write_previews` writes."""
    folder = f"samples/{safe_name(row_id)}"
    if count <= 0:
        return {"format": "none", "fps": fps, "folder": None, "files": [], "note": "no preview clips (--preview 0)"}
    if mp4_available():
        info, suffix = {**VIDEO_FORMAT, "fps": fps}, ".mp4"
    else:
        info = {**GIF_FORMAT, "fps": fps,
                "note": f"{mp4_unavailable_reason()}, so the preview clips are GIF; install av (with libx264) for MP4"}
        suffix = ".gif"
    return {**info, "folder": folder, "files": [f"{folder}/{k}{suffix}" for k in range(count)]}


def write_previews(run: str | Path, plan: dict, videos) -> list[Path]:
    """Write ``videos[k]`` to ``run/plan["files"][k]`` (``plan`` from :func:`preview_files`); files of
    an earlier run of the same row beyond these are removed. Returns the paths written."""
    if not plan.get("files"):
        return []
    run = Path(run)
    samples = (run / "samples").resolve()
    folder = run / plan["folder"]
    if folder.is_symlink() or not folder.resolve().is_relative_to(samples) or folder.resolve() == samples:
        raise ValueError(f"{folder}: preview clips go into a folder inside {run / 'samples'}, not a link or elsewhere")
    folder.mkdir(parents=True, exist_ok=True)
    if len(videos) < len(plan["files"]):
        raise ValueError(f"{len(plan['files'])} preview files planned but {len(videos)} clips given")
    keep = {Path(f).name for f in plan["files"]}
    for old in folder.iterdir():
        if re.fullmatch(r"\d+\.(mp4|gif)", old.name) and old.name not in keep and old.is_file():
            old.unlink()
    write = write_mp4 if plan["format"] == "mp4" else write_gif
    return [write(run / f, videos[k], plan["fps"]) for k, f in enumerate(plan["files"])]
