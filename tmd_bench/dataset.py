"""Training data for real teachers: teacher samples or encoded videos, as sharded latents.

The paper distills on teacher-generated clips; a Wan teacher has no built-in world, so its
training data is a folder written once and streamed by ``tmd-bench distill --data DIR``:

- ``tmd-bench data generate`` samples the teacher (its CFG Euler sampler, :mod:`tmd_bench.harness`)
  for a prompt file and keeps the **latents before decoding**;
- ``tmd-bench data encode`` encodes a folder of captioned videos with the teacher's VAE.

**Format.** ``DIR/index.json`` plus ``DIR/shard-00000.safetensors``, ``shard-00001…``. Shard ``k``
holds clips ``[k·shard_size, (k+1)·shard_size)`` (the last one fewer), as tensors

- ``latents`` ``(n, C, F, H, W)``: what the teacher's transformer denoises (Wan: VAE latents after
  its per-channel normalisation ``(z − mean) / std``; the Shapes teacher: pixels in [−1, 1]);
- ``text`` ``(n, S', D)``: the teacher's text embeddings, zero past each prompt's end (Wan's
  convention); trailing positions that are zero for every clip of the shard are left out
  (``S' ≤ S``) and readers pad them back;
- ``seed`` ``(n,)`` int64: the clip's noise seed (``generate``; ``-1`` for encoded videos);
- ``id`` ``(n,)`` int64: the clip's index in the dataset;

and the metadata entry ``tmd_bench``: JSON ``{"format": "tmd-bench-latents/1", "prompts": [the n prompts]}``.
``index.json`` says ``count``, ``complete``, the shard files, ``latent_shape`` ``[C, F, H, W]``,
``text_shape`` ``[S, D]``, ``dtype``, the teacher (id and hashes of its transformer, text encoder
and VAE), the video size, the sampler (generate) or sources (encode), and the ``command``.

**Resume.** A shard is written to a temporary name and renamed, so a shard file that exists is
complete. Re-running the same command skips them and writes the rest; each clip's noise comes
from its own seed and each shard is sampled in the same batches, so a resumed dataset is
byte-identical to an uninterrupted one. Under torchrun, rank ``r`` of ``K`` writes shards
``r, r + K, …``.

:class:`ShardBatches` streams the global batches for training (see its docstring).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from tmd_bench.teachers import Teacher, weights_hash

FORMAT = "tmd-bench-latents/1"
INDEX = "index.json"
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".webp", ".safetensors")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DataError(ValueError):
    """A data folder that cannot be written, read or used with this teacher (exit status 2)."""


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def _identity(teacher: Teacher, kind: str, **video) -> dict:
    """What a data folder's index records of its teacher and shapes (shared by generate and encode)."""
    spec = teacher.spec
    return {
        "kind": kind,
        "teacher": {"name": teacher.name, "hashes": teacher_hashes(teacher)},
        "latent_shape": list(teacher.latent_shape(1)[1:]),
        "text_shape": [spec.max_sequence_length, teacher.transformer.config.text_dim],
        "dtype": _dtype_name(teacher.dtype),
        "video": {"frames": spec.frames, "height": spec.height, "width": spec.width, **video},
    }


def teacher_hashes(teacher: Teacher) -> dict[str, str]:
    """Hashes of the files the data depends on: the transformer (samples), the text encoder (the
    embeddings) and the VAE (the latent space); ``unsaved`` for a teacher built in memory."""
    if teacher.path is None:
        return {"transformer": "unsaved", "text_encoder": "unsaved", "vae": "unsaved"}
    out = {"transformer": teacher.checkpoint_hash(), "text_encoder": weights_hash(teacher.path / "text_encoder")}
    out["vae"] = weights_hash(teacher.path / "vae") if (teacher.path / "vae").is_dir() else "none"
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _trim_text(text: torch.Tensor) -> torch.Tensor:
    """Drop the trailing sequence positions that are zero in every row."""
    used = (text != 0).flatten(2).any(-1).any(0).nonzero()
    return text[:, : int(used.max()) + 1 if len(used) else 1]


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _write_shard(path: Path, latents: torch.Tensor, text: torch.Tensor, seeds: list[int], ids: list[int],
                 prompts: list[str]) -> None:
    from safetensors.torch import save_file

    tensors = {"latents": latents.contiguous(), "text": _trim_text(text).contiguous(),
               "seed": torch.tensor(seeds, dtype=torch.int64), "id": torch.tensor(ids, dtype=torch.int64)}
    tmp = path.with_name(path.name + ".tmp")
    # one metadata entry: safetensors writes its metadata map in no fixed order, and shards must be byte-stable
    save_file(tensors, str(tmp), metadata={"tmd_bench": json.dumps({"format": FORMAT, "prompts": prompts})})
    os.replace(tmp, path)


@dataclass
class _Plan:
    """What a writer produces: ``count`` clips in shards of ``shard_size``; ``identity`` must match on resume."""

    out: Path
    count: int
    shard_size: int
    identity: dict  # everything the shards' bytes depend on
    info: dict  # recorded, not compared (command, sources' paths)

    @property
    def num_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def span(self, k: int) -> tuple[int, int]:
        return k * self.shard_size, min((k + 1) * self.shard_size, self.count)

    def done(self) -> list[int]:
        return [k for k in range(self.num_shards) if (self.out / shard_name(k)).is_file()]

    def index(self) -> dict:
        done = self.done()
        shards = [{"file": shard_name(k), "first": self.span(k)[0], "count": self.span(k)[1] - self.span(k)[0]}
                  for k in done]
        return {"format": FORMAT, **self.identity, "count": self.count, "complete": len(done) == self.num_shards,
                "shards": shards, **self.info}


def _run(plan: _Plan, write: Callable[[int, int, int], None], rank: int = 0, world: int = 1,
         on_shard: Callable[[int], None] | None = None) -> dict:
    """Check or create ``index.json``, then write every missing shard of this rank; the final index."""
    from tmd_bench import distributed

    out = plan.out
    index_path = out / INDEX
    if index_path.is_file():
        old = json.loads(index_path.read_text())
        diff = {k: (old.get(k), v) for k, v in plan.identity.items() if old.get(k) != v}
        if old.get("count") != plan.count:
            diff["count"] = (old.get("count"), plan.count)
        if diff:
            raise DataError(f"{out} holds another dataset; it differs in (saved, now): {diff}. "
                            "Pick another --out, or re-run the command that wrote it to resume it")
    elif out.exists() and any(out.glob("shard-*.safetensors")):
        raise DataError(f"{out} holds shards but no {INDEX}; pick another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(index_path, plan.index())
    distributed.barrier()
    done = set(plan.done())
    for k in range(plan.num_shards):
        if k % world != rank or k in done:
            continue
        lo, hi = plan.span(k)
        write(k, lo, hi)
        if rank == 0:
            _write_json(index_path, plan.index())
        if on_shard:
            on_shard(k)
    distributed.barrier()
    index = plan.index()
    if rank == 0:
        _write_json(index_path, index)
    return index


# ---------------------------------------------------------------------------------------------
# data generate


def generate(teacher: Teacher, prompts: list[str], out: str | Path, *, steps: int = 50, guidance: float | None = None,
             shift: float | None = None, solver: str | None = None, per_prompt: int = 1, seed: int = 0,
             shard_size: int = 256, batch_size: int = 8, prompts_source: str = "", command: str = "",
             rank: int = 0, world: int = 1, on_shard: Callable[[int], None] | None = None) -> dict:
    """Teacher samples (latents before decoding) and text embeddings for ``per_prompt`` clips per
    prompt: clip ``j`` is prompt ``j // per_prompt`` with the noise of seed ``seed + j`` (as
    ``tmd-bench evaluate`` seeds clip ``j``). Video size: the teacher's spec (set it beforehand)."""
    from tmd_bench import harness

    for name, v in (("--steps", steps), ("--per-prompt", per_prompt), ("--shard-size", shard_size),
                    ("--batch-size", batch_size)):
        if v < 1:
            raise DataError(f"{name} must be ≥ 1, got {v}")
    if not prompts:
        raise DataError("no prompts")
    method = harness.teacher_method(teacher, solver or teacher.spec.solver, guidance, shift)
    sampler = method.config(steps)
    spec = teacher.spec
    identity = {
        **_identity(teacher, "generated"),
        "sampler": sampler,
        "negative_prompt": spec.negative_prompt,
        "prompts": {"count": len(prompts), "sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]},
        "per_prompt": per_prompt, "seed": seed, "shard_size": shard_size, "batch_size": batch_size,
    }
    plan = _Plan(Path(out), len(prompts) * per_prompt, shard_size, identity,
                 {"prompts_source": prompts_source, "command": command})
    negative = teacher.encode_text([spec.negative_prompt])

    def write(k: int, lo: int, hi: int) -> None:
        lat, txt = [], []
        for b in range(lo, hi, batch_size):
            ids = list(range(b, min(b + batch_size, hi)))
            text = teacher.encode_text([prompts[j // per_prompt] for j in ids])
            seeds = [seed + j for j in ids]
            lat.append(method.sample(harness.noise_for_seeds(teacher, seeds), text, negative, steps, seeds).cpu())
            txt.append(text.cpu())
        ids = list(range(lo, hi))
        _write_shard(plan.out / shard_name(k), torch.cat(lat), torch.cat(txt), [seed + j for j in ids], ids,
                     [prompts[j // per_prompt] for j in ids])

    return _run(plan, write, rank, world, on_shard)


# ---------------------------------------------------------------------------------------------
# data encode


def list_videos(folder: str | Path) -> list[tuple[Path, str]]:
    """``(video, caption)`` pairs of a folder, sorted by file name. Captions come from
    ``captions.jsonl`` (lines ``{"video": "name.mp4", "caption": "…"}``, paths relative to the folder)
    when it exists, otherwise from ``name.txt`` beside each ``name.<ext>``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--videos {folder}: no such folder")
    pairs: list[tuple[Path, str]] = []
    jsonl = folder / "captions.jsonl"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{jsonl}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("video"), str) \
                    or not isinstance(obj.get("caption"), str) or not obj["caption"].strip():
                raise DataError(f'{jsonl}:{n}: each line must be {{"video": "name.mp4", "caption": "…"}}')
            path = folder / obj["video"]
            if not path.is_file():
                raise DataError(f"{jsonl}:{n}: {obj['video']} is not a file in {folder}")
            pairs.append((path, obj["caption"].strip()))
    else:
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
            caption = path.with_suffix(".txt")
            if not caption.is_file():
                raise DataError(f"{path.name} has no caption: write {caption.name} beside it, or a captions.jsonl")
            pairs.append((path, caption.read_text().strip()))
    if not pairs:
        raise DataError(f"{folder} holds no captioned videos ({', '.join(VIDEO_SUFFIXES)} with captions.jsonl "
                        "or a .txt beside each)")
    return pairs


def read_video(path: str | Path) -> torch.Tensor:
    """A video as float ``(3, F, H, W)`` in [−1, 1].

    - ``.safetensors``: a tensor (key ``video``, or the file's only tensor) — not ``.pt``: nothing the
      toolkit reads is unpickled,
      uint8 ``(F, H, W, 3)`` (torchvision's ``read_video`` layout) or float ``(3, F, H, W)`` in [−1, 1];
    - ``.gif`` / ``.webp``: the animation's frames, read with Pillow;
    - ``.mp4``, ``.webm``, ``.mov``, ``.mkv``, ``.avi``: decoded with PyAV (``pip install av``), when installed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        d = load_file(str(path))
        if "video" not in d and len(d) != 1:
            raise DataError(f"{path}: a .safetensors video holds one tensor or a tensor named 'video'")
        t = d["video"] if "video" in d else next(iter(d.values()))
        if not torch.is_tensor(t) or t.ndim != 4:
            raise DataError(f"{path}: expected a 4-d tensor, uint8 (F, H, W, 3) or float (3, F, H, W)")
        if t.dtype == torch.uint8:
            if t.shape[-1] != 3:
                raise DataError(f"{path}: a uint8 video is (F, H, W, 3), got {tuple(t.shape)}")
            return t.permute(3, 0, 1, 2).float() / 127.5 - 1
        if t.shape[0] != 3:
            raise DataError(f"{path}: a float video is (3, F, H, W) in [-1, 1], got {tuple(t.shape)}")
        return t.float().clamp(-1, 1)
    if suffix in (".gif", ".webp"):
        import numpy as np
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
        return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1
    if suffix not in VIDEO_SUFFIXES:
        why = " (.pt would need unpickling, which tmd-bench never does)" if suffix == ".pt" else ""
        raise DataError(f"{path}: {suffix or 'no suffix'} is not a video format tmd-bench reads{why}; "
                        f"use one of {', '.join(VIDEO_SUFFIXES)}")
    try:
        import av
    except ImportError:
        raise DataError(f"{path}: reading {suffix} needs PyAV (pip install av), which is not installed; "
                        "or convert the videos to .gif or to .safetensors frame tensors") from None
    import numpy as np

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise DataError(f"{path}: no video frames")
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1


def fit_video(video: torch.Tensor, frames: int, height: int, width: int, stride: int = 1,
              name: str = "video") -> torch.Tensor:
    """The first ``frames`` frames (every ``stride``-th), resized to cover ``height × width`` and
    centre-cropped: ``(3, frames, height, width)``."""
    v = video[:, ::stride]
    if v.shape[1] < frames:
        raise DataError(f"{name}: {v.shape[1]} frames (stride {stride}), fewer than --frames {frames}")
    v = v[:, :frames].permute(1, 0, 2, 3)  # (F, 3, H, W)
    h, w = v.shape[-2:]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        v = torch.nn.functional.interpolate(v, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return v[..., top:top + height, left:left + width].permute(1, 0, 2, 3).clamp(-1, 1).contiguous()


def encode(teacher: Teacher, videos: str | Path, out: str | Path, *, shard_size: int = 256, frame_stride: int = 1,
           command: str = "", rank: int = 0, world: int = 1, on_shard: Callable[[int], None] | None = None) -> dict:
    """VAE latents (the posterior mean, normalised as the teacher's latents) and text embeddings of a
    folder of captioned videos (:func:`list_videos`), at the teacher spec's video size."""
    if shard_size < 1 or frame_stride < 1:
        raise DataError(f"--shard-size and --frame-stride must be ≥ 1, got {shard_size} and {frame_stride}")
    pairs = list_videos(videos)
    spec = teacher.spec
    st = spec.vae_stride[0]
    if st > 1 and (spec.frames - 1) % st:
        raise DataError(f"--frames must be {st}k + 1 for this teacher's VAE, got {spec.frames}")
    listing = [(p.relative_to(Path(videos)).as_posix(), p.stat().st_size, c) for p, c in pairs]
    identity = {
        **_identity(teacher, "encoded", frame_stride=frame_stride),
        "sources": {"count": len(pairs), "sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]},
        "shard_size": shard_size,
    }
    plan = _Plan(Path(out), len(pairs), shard_size, identity,
                 {"videos": str(Path(videos).resolve()), "command": command})

    def write(k: int, lo: int, hi: int) -> None:
        lat, txt = [], []
        for j in range(lo, hi):
            path, caption = pairs[j]
            clip = fit_video(read_video(path), spec.frames, spec.height, spec.width, frame_stride, path.name)
            with torch.no_grad():
                z = teacher.encode(clip.unsqueeze(0).to(teacher.device))
            lat.append(z.to(teacher.dtype).cpu())
            txt.append(teacher.encode_text([caption]).cpu())
        ids = list(range(lo, hi))
        _write_shard(plan.out / shard_name(k), torch.cat(lat), torch.cat(txt), [-1] * len(ids), ids,
                     [pairs[j][1] for j in ids])

    return _run(plan, write, rank, world, on_shard)


# ---------------------------------------------------------------------------------------------
# Reading


class LatentDataset:
    """A complete data folder, read clip by clip (shards memory-mapped, opened on demand)."""

    def __init__(self, folder: str | Path, max_open: int = 64):
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            raise DataError(f"--data {self.folder}: no {INDEX} (write one with `tmd-bench data generate` or "
                            "`tmd-bench data encode`)")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != FORMAT:
            raise DataError(f"{path}: format {self.index.get('format')!r}, expected {FORMAT!r}")
        if not self.index.get("complete"):
            raise DataError(f"--data {self.folder} is incomplete ({len(self.index['shards'])} shards of "
                            f"{-(-self.index['count'] // self.index['shard_size'])}): re-run the command that wrote it "
                            f"to finish it ({self.index.get('command') or 'tmd-bench data …'})")
        self.shard_size = self.index["shard_size"]
        self.text_len = self.index["text_shape"][0]
        self.max_open = max_open
        self._open: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.index["count"]

    @property
    def identity(self) -> dict:
        """What a training run records about its data (compared on resume)."""
        ix = self.index
        same = {k: v for k, v in ix.items() if k not in ("shards", "complete", "command", "videos", "prompts_source")}
        return {"kind": ix["kind"], "count": len(self), "teacher": ix["teacher"]["name"],
                "fingerprint": hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:16]}

    def _shard(self, k: int):
        if k not in self._open:
            from safetensors import safe_open

            if len(self._open) >= self.max_open:
                self._open.pop(next(iter(self._open)))
            f = safe_open(str(self.folder / shard_name(k)), "pt")
            self._open[k] = (f, json.loads(f.metadata()["tmd_bench"])["prompts"])
        return self._open[k]

    def rows(self, ids: list[int]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Prompts, latents ``(n, C, F, H, W)`` and text ``(n, S, D)`` of clips ``ids``, in that order."""
        prompts, lat, txt = [], [], []
        for i in ids:
            k, r = divmod(int(i), self.shard_size)
            f, p = self._shard(k)
            prompts.append(p[r])
            lat.append(f.get_slice("latents")[r:r + 1])
            t = f.get_slice("text")[r:r + 1]
            txt.append(torch.nn.functional.pad(t, (0, 0, 0, self.text_len - t.shape[1])))
        return prompts, torch.cat(lat), torch.cat(txt)

    def check_teacher(self, teacher: Teacher) -> None:
        """The data must be in this teacher's latent and text spaces; a :class:`DataError` says why not."""
        ix, where = self.index, f"--data {self.folder}"
        if ix["teacher"]["name"] != teacher.name:
            raise DataError(f"{where} was written by teacher {ix['teacher']['name']!r}; this run distills "
                            f"{teacher.name!r}")
        saved, now = ix["teacher"]["hashes"], teacher_hashes(teacher)
        needed = ["text_encoder", "vae"] + (["transformer"] if ix["kind"] == "generated" else [])
        for part in needed:
            if "unsaved" not in (saved.get(part), now[part]) and saved.get(part) != now[part]:
                raise DataError(f"{where}: the teacher's {part} differs from the one that wrote the data "
                                f"(weights hash {saved.get(part)} there, {now[part]} here)")
        c, f, h, w = ix["latent_shape"]
        if c != teacher.latent_channels:
            raise DataError(f"{where}: latents have {c} channels; teacher {teacher.name!r} has {teacher.latent_channels}")
        pt, ph, pw = teacher.transformer.config.patch_size
        if f % pt or h % ph or w % pw:
            raise DataError(f"{where}: latent shape {ix['latent_shape']} is not divisible by the teacher's patch "
                            f"size {(pt, ph, pw)}")
        s, d = ix["text_shape"]
        if (s, d) != (teacher.spec.max_sequence_length, teacher.transformer.config.text_dim):
            raise DataError(f"{where}: text embeddings are {s}×{d}; teacher {teacher.name!r} uses "
                            f"{teacher.spec.max_sequence_length}×{teacher.transformer.config.text_dim}")


def global_batch_ids(position: int, batch_size: int, count: int, seed: int,
                     perm: Callable[[int], torch.Tensor] | None = None) -> list[int]:
    """Clip ids of global batch ``position``: the stream is epoch after epoch of a permutation of the
    clips drawn from ``(seed, epoch)``, cut into batches of ``batch_size`` (a batch may span two epochs)."""
    perm = perm or (lambda e: epoch_permutation(count, seed, e))
    out = []
    for g in range(position * batch_size, (position + 1) * batch_size):
        epoch, i = divmod(g, count)
        out.append(int(perm(epoch)[i]))
    return out


def epoch_permutation(count: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * epoch + 29))


class ShardBatches:
    """Training batches from a data folder: the distillation loop's ``data`` (like ``WorldBatches``).

    ``position`` counts global batches consumed; batch ``p`` is a pure function of (seed, p) (see
    :func:`global_batch_ids`), so a resumed run continues exactly where it stopped. Under torchrun
    (``world > 1``) each rank reads only its rows ``[rank·B/K, (rank+1)·B/K)`` of the global batch
    of ``B``, and marks them (``batch.rows``) so the distributed step knows which rows it holds.
    """

    def __init__(self, data: LatentDataset, teacher: Teacher, batch_size: int, seed: int = 0, rank: int = 0,
                 world: int = 1):
        if batch_size % world:
            raise DataError(f"the global batch ({batch_size}) must be divisible by the number of processes ({world})")
        self.data, self.teacher, self.batch_size, self.seed = data, teacher, batch_size, seed
        local = batch_size // world
        self.lo, self.hi, self.world = rank * local, (rank + 1) * local, world
        self.position = 0
        self._perms: dict[int, torch.Tensor] = {}

    @property
    def identity(self) -> dict:
        return self.data.identity

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = epoch_permutation(len(self.data), self.seed, epoch)
        return self._perms[epoch]

    def ids(self, position: int) -> list[int]:
        """This rank's clip ids of global batch ``position``."""
        return global_batch_ids(position, self.batch_size, len(self.data), self.seed, self._perm)[self.lo:self.hi]

    def __iter__(self):
        return self

    def __next__(self):
        from tmd_bench.distill.data import Batch

        prompts, latents, text = self.data.rows(self.ids(self.position))
        self.position += 1
        dev, dtype = self.teacher.device, self.teacher.dtype
        rows = (self.lo, self.hi, self.batch_size) if self.world > 1 else None
        # latents float32 (noising and losses run there), text embeddings in the compute dtype
        return Batch(prompts, latents.to(dev, torch.float32), text.to(dev, dtype), rows=rows)


def open_for(teacher: Teacher, folder: str | Path, batch_size: int, seed: int = 0, sharded: bool = False) -> ShardBatches:
    """The training stream of ``folder`` for ``teacher`` (checked), this process's rows when ``sharded``."""
    from tmd_bench import distributed

    data = LatentDataset(folder)
    data.check_teacher(teacher)
    rank, world = (distributed.rank(), distributed.world_size()) if sharded else (0, 1)
    return ShardBatches(data, teacher, batch_size, seed, rank, world)
