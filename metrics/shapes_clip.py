"""Shapes-CLIP: a tiny open_clip model trained contrastively on the Shapes world (evaluation spec §3).

It plays the part CLIP plays on real text-to-video models, on a world small enough to ship the
model with the package (``tmd_bench/assets/shapes-clip/``, about 1 MB) and to train it again in
minutes on one CPU thread (``tmd-bench metrics train-shapes-clip``):

- the model is open_clip's own :class:`open_clip.model.CLIP` built from a config dict
  (:data:`MODEL_CONFIG`: a 3-layer ViT on 24×24 frames with 4×4 patches, a 2-layer causal text
  transformer, 32-d joint space, learnable logit scale);
- text goes through open_clip's bundled BPE tokenizer (offline), whose ids are remapped to a
  compact vocabulary: the ~30 BPE tokens of the world's prompts plus pad/start/end/unknown, so the
  embedding table holds 33 rows instead of 49,408;
- the image tower sees **one frame** (like CLIP on a real video), so the CLIP score is the frame
  average of ``max(100·cos(E_img(frame), E_txt(prompt)), 0)`` exactly as in ``metrics/clip.py``.
  A single frame does not show motion: Shapes-CLIP, like CLIP, is blind to the motion words (the
  oracle reads motion exactly);
- training: InfoNCE over image–caption pairs, one random frame per clip of the
  :class:`~tmd_bench.world.ShapesStream` (all colour–shape pairs, held-out ones included: it is an
  evaluator, not a generator), with every pair of identical captions in a batch counted as a
  positive (multi-positive targets), so duplicate prompts are not pushed apart;
- video features for the Fréchet distance (the FVD analogue, ``fd_real``):
  ``[mean_f E_img(frame_f), E_img(frame_last) − E_img(frame_first)]`` — appearance plus how it
  drifts over the clip (64-d).

Weights are read from safetensors (nothing is unpickled) and checked against the SHA-256 in the
training record; a missing or damaged file is a clear error saying how to rebuild it.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tmd_bench.metrics.clip import CLIPScorer, ClipWeightsNotFound, file_hash

import tmd_bench
from tmd_bench import world

ASSET_DIR = Path(tmd_bench.__file__).resolve().parent / "assets" / "shapes-clip"
WEIGHTS, CONFIG, RECORD = "model.safetensors", "config.json", "training.json"
NAME = "shapes-clip"
REBUILD = "tmd-bench metrics train-shapes-clip --out runs/shapes-clip --export"

CONTEXT_LENGTH = 16  # the longest world prompt is 13 tokens with start and end
PAD, SOT, EOT, UNK = 0, 1, 2, 3  # compact ids; world tokens follow
MODEL_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": world.HEIGHT, "patch_size": 4, "layers": 3, "width": 64, "head_width": 16,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": None, "width": 64, "heads": 4, "layers": 2,
                 "mlp_ratio": 2.0, "pool_type": "eos", "eos_id": EOT, "pad_id": PAD},
}


def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def world_bpe_ids() -> list[int]:
    """The BPE ids of every word the Shapes world's prompts use (sorted)."""
    bpe = _bpe()
    return sorted({i for w in world.vocabulary() for i in bpe.encode(w)})


class ShapesTokenizer:
    """open_clip's bundled BPE tokenizer, ids remapped to the compact vocabulary
    ``[pad, start, end, unknown, *bpe_ids]``; words outside the world map to *unknown*."""

    def __init__(self, bpe_ids: list[int], context_length: int = CONTEXT_LENGTH):
        self.bpe = _bpe()
        self.bpe_ids = list(bpe_ids)
        self.context_length = context_length
        lut = torch.full((len(self.bpe.encoder),), UNK, dtype=torch.long)
        lut[torch.tensor(self.bpe_ids)] = torch.arange(4, 4 + len(self.bpe_ids))
        lut[self.bpe.sot_token_id], lut[self.bpe.eot_token_id] = SOT, EOT
        self.lut = lut

    @property
    def vocab_size(self) -> int:
        return 4 + len(self.bpe_ids)

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.full((len(texts), self.context_length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.bpe.encode(text)[: self.context_length - 2]
            ids = [self.bpe.sot_token_id, *ids, self.bpe.eot_token_id]
            out[row, : len(ids)] = self.lut[torch.tensor(ids)]
        return out


def model_config(bpe_ids: list[int]) -> dict:
    cfg = json.loads(json.dumps(MODEL_CONFIG))
    cfg["text_cfg"]["vocab_size"] = 4 + len(bpe_ids)
    return cfg


def build_model(config: dict) -> torch.nn.Module:
    """open_clip's CLIP from a config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    from open_clip.model import CLIP

    model = CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"])
    # frames in [−1, 1] go in as they are: (x/2 + 1/2 − 0.5)/0.5 = x
    model.visual.preprocess_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    return model


@dataclass
class ShapesCLIPScorer(CLIPScorer):
    """:class:`~tmd_bench.metrics.clip.CLIPScorer` for Shapes-CLIP: frames enter at their own size."""

    @torch.no_grad()
    def frame_features(self, videos: torch.Tensor) -> torch.Tensor:
        """``(B, 3, F, H, W)`` in [−1, 1] → normalised image features ``(B, F, D)``."""
        b, c, f, h, w = videos.shape
        size = tuple(self.model.visual.image_size)
        frames = videos.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).float().to(self.device)
        if (h, w) != size:
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
        feats = self.model.encode_image(frames.clamp(-1, 1)).float()
        return F.normalize(feats, dim=-1).view(b, f, -1)

    def video_features(self, videos: torch.Tensor) -> torch.Tensor:
        """``(B, 2D)``: mean frame feature and last − first frame feature (the FVD analogue's input)."""
        return video_features_from_frames(self.frame_features(videos))


def video_features_from_frames(e: torch.Tensor) -> torch.Tensor:
    """``(B, F, D)`` frame features → ``(B, 2D)``: their mean, and last − first."""
    return torch.cat([e.mean(1), e[:, -1] - e[:, 0]], dim=1)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class ShapesClipTrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     captions: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE on normalised features with a learnable temperature; pairs whose captions
    are identical are all positives (the target row spreads its mass over them)."""
    logits = logit_scale.exp().clamp(max=100) * image_features @ text_features.T
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    label = torch.tensor([ids[c] for c in captions], device=logits.device)
    same = (label[:, None] == label[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _frames_batch(stream: world.ShapesStream, generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
    """One random frame of each clip of the stream's next batch: ``(B, 3, H, W)``."""
    prompts, clips = next(stream)
    k = torch.randint(0, clips.shape[2], (len(clips),), generator=generator)
    return prompts, clips[torch.arange(len(clips)), :, k]


def batch_loss(model: torch.nn.Module, tokenizer: ShapesTokenizer, prompts: list[str],
               frames: torch.Tensor) -> torch.Tensor:
    img = F.normalize(model.encode_image(frames), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    return contrastive_loss(img, txt, model.logit_scale, prompts)


def train_shapes_clip(cfg: ShapesClipTrainConfig, log=None, config: dict | None = None,
                      progress: bool = True) -> tuple[torch.nn.Module, ShapesTokenizer, dict]:
    """Train Shapes-CLIP from scratch (deterministic in ``cfg.seed``); returns the model, its
    tokenizer and the training record (steps, wall time, loss, seed, the command that reproduces it)."""
    from tmd_bench.progress import progress_bar

    bpe_ids = world_bpe_ids()
    config = config or model_config(bpe_ids)
    tokenizer = ShapesTokenizer(bpe_ids, config["text_cfg"]["context_length"])
    torch.manual_seed(cfg.seed)
    model = build_model(config).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))

    stream = world.ShapesStream(cfg.batch_size, seed=cfg.seed, include_held_out=True)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[float] = []
    t0 = time.time()
    with progress_bar() as bar:
        task = bar.add_task("shapes-clip", total=cfg.steps, status="", visible=progress)
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            prompts, frames = _frames_batch(stream, g)
            loss = batch_loss(model, tokenizer, prompts, frames)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if step % 50 == 0 or step == cfg.steps - 1:
                bar.update(task, status=f"loss {loss.item():.3f} T⁻¹ {model.logit_scale.exp().item():.1f}")
                if log is not None:
                    log(step, losses[-1], model.logit_scale.exp().item())
            bar.advance(task)
    wall = time.time() - t0
    model.eval().requires_grad_(False)
    tail = losses[-100:]
    record = {
        "train": {**asdict(cfg), "frames_per_clip": 1, "include_held_out": True},
        "steps": cfg.steps, "wall_time_s": round(wall, 1), "threads": torch.get_num_threads(),
        "final_loss_last100": round(sum(tail) / len(tail), 4), "first_loss": round(losses[0], 4),
        "logit_scale": round(float(model.logit_scale.exp()), 2),
        "torch": torch.__version__, "tmd_bench": tmd_bench.__version__,
        "command": shlex.join(["tmd-bench", "metrics", "train-shapes-clip", "--steps", str(cfg.steps),
                               "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr), "--seed", str(cfg.seed),
                               "--out", "runs/shapes-clip", "--export"]),
    }
    return model, tokenizer, record


def save_shapes_clip(folder: str | Path, model: torch.nn.Module, tokenizer: ShapesTokenizer, config: dict,
                     record: dict) -> Path:
    """Write ``model.safetensors``, ``config.json`` (model config + tokenizer ids) and ``training.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS),
              metadata={"format": "pt", "model": NAME})
    (folder / CONFIG).write_text(json.dumps({"name": NAME, "model": config, "tokenizer": {
        "kind": "open_clip SimpleTokenizer (bundled BPE), ids remapped to [pad, start, end, unknown, *bpe_ids]",
        "bpe_ids": tokenizer.bpe_ids, "context_length": tokenizer.context_length}}, indent=2))
    (folder / RECORD).write_text(json.dumps({**record, "model_sha256": file_hash(folder / WEIGHTS)}, indent=2))
    return folder


def load_shapes_clip(folder: str | Path | None = None, device="cpu") -> ShapesCLIPScorer:
    """The shipped Shapes-CLIP (or the one in ``folder``) as a CLIP scorer."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder else ASSET_DIR
    weights, config_path = folder / WEIGHTS, folder / CONFIG
    for p in (weights, config_path):
        if not p.is_file():
            raise ClipWeightsNotFound(f"Shapes-CLIP file missing: {p}; rebuild it (a few minutes on a CPU) with\n"
                                      f"    {REBUILD}")
    try:
        meta = json.loads(config_path.read_text())
        config, tok = meta["model"], meta["tokenizer"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{config_path} is not a Shapes-CLIP config ({e}); rebuild it with: {REBUILD}") from None
    digest = file_hash(weights)
    record_path = folder / RECORD
    if record_path.is_file():
        expected = json.loads(record_path.read_text()).get("model_sha256")
        if expected and expected != digest:
            raise ValueError(f"{weights} is damaged: SHA-256 {digest} differs from {expected} recorded in "
                             f"{record_path}; rebuild it with: {REBUILD}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{weights} is not a readable safetensors file ({e}); rebuild it with: {REBUILD}") from None
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise ValueError(f"{weights} does not fit the Shapes-CLIP config in {config_path}: "
                         f"{(lines[1] if len(lines) > 1 else lines[0]).strip()}") from None
    model.to(device).eval().requires_grad_(False)
    tokenizer = ShapesTokenizer(tok["bpe_ids"], tok["context_length"])
    return ShapesCLIPScorer(model, tokenizer, NAME, weights, digest)


# ---------------------------------------------------------------------------------------------
# Metrics for `evaluate`


class ShapesClipMetrics:
    """``clip_score`` and ``fd_real`` for the clips of one suite; the real renders' features (same
    prompts, same seeds) are computed once and reused for every row."""

    IMPLEMENTATION = {
        "shapes-clip": "Shapes-CLIP (open_clip CLIP, tiny config, trained on the Shapes world), "
                       "frame-averaged max(100·cos, 0)",
        "fd": "Fréchet distance of Shapes-CLIP video features [mean frame feature, last − first] between the "
              "generated clips and world renders of the same prompts and seeds",
    }

    def __init__(self, scorer: ShapesCLIPScorer | None = None):
        self.scorer = scorer or load_shapes_clip()
        self._real: tuple[tuple, torch.Tensor] | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (videos, their frame features)

    def frame_features(self, videos: torch.Tensor) -> torch.Tensor:
        """Frame features of ``videos``; the last clips' are kept, so clip_score and fd_real share them."""
        if self._last is None or self._last[0] is not videos:
            self._last = (videos, self.scorer.frame_features(videos))  # holding videos keeps its id unique
        return self._last[1]

    def clip_score(self, videos: torch.Tensor, prompts: list[str]) -> float:
        if len(videos) != len(prompts):
            raise ValueError(f"{len(videos)} clips for {len(prompts)} prompts")
        cos = torch.einsum("bfd,bd->bf", self.frame_features(videos), self.scorer.text_features(prompts))
        return float((100 * cos).clamp_min(0).mean(1).mean())

    def video_features(self, videos: torch.Tensor) -> torch.Tensor:
        return video_features_from_frames(self.frame_features(videos))

    def real_features(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        key = (tuple(prompts), tuple(seeds))
        if self._real is None or self._real[0] != key:
            self._real = (key, self.scorer.video_features(world.render_prompts(prompts, seeds)))
        return self._real[1]

    def fd_real(self, videos: torch.Tensor, prompts: list[str], seeds: list[int]) -> float:
        from tmd_bench.metrics.fidelity import frechet_distance

        if len(videos) < 2:
            return float("nan")
        return frechet_distance(self.video_features(videos).cpu().numpy(),
                                self.real_features(prompts, seeds).cpu().numpy())

    FLOOR_SEED_OFFSET = 10_000_019  # the floor's renders: the same prompts, seeds no suite draw uses

    def fd_real_floor(self, prompts: list[str], seeds: list[int]) -> float:
        """``fd_real`` of the world's own renders (same prompts, other seeds) at the same N: what a perfect
        generator scores at this N. FD shrinks with N, so a row is read against its floor."""
        from tmd_bench.metrics.fidelity import frechet_distance

        if len(prompts) < 2:
            return float("nan")
        other = world.render_prompts(prompts, [s + self.FLOOR_SEED_OFFSET for s in seeds])
        return frechet_distance(self.scorer.video_features(other).cpu().numpy(),
                                self.real_features(prompts, seeds).cpu().numpy())

    def impl(self, name: str) -> dict:
        return {"implementation": self.IMPLEMENTATION[name], "weights": str(self.scorer.weights),
                "weights_sha256": self.scorer.weights_sha256}


@torch.no_grad()
def zero_shot_accuracy(scorer: ShapesCLIPScorer, num_clips: int = 256, seed: int = 12345) -> dict:
    """Read each attribute back by zero-shot classification over every prompt of the world
    (highest frame-averaged cosine); real renders of random scenes, seeded."""
    scenes = world.all_scenes()
    g = torch.Generator().manual_seed(seed)
    picked = [scenes[i] for i in torch.randint(0, len(scenes), (num_clips,), generator=g).tolist()]
    clips = world.render_batch(picked, g)
    text = scorer.text_features([s.prompt for s in scenes])
    best = (scorer.frame_features(clips).mean(1) @ text.T).argmax(1).tolist()
    acc = {a: sum(getattr(scenes[b], a) == getattr(s, a) for b, s in zip(best, picked)) / num_clips
           for a in world.ATTRIBUTES}
    static = [a for a in world.ATTRIBUTES if a != "motion"]
    acc["all_static"] = sum(all(getattr(scenes[b], a) == getattr(s, a) for a in static)
                            for b, s in zip(best, picked)) / num_clips
    return acc
