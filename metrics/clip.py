"""CLIP score with open_clip, from local weights only (evaluation spec §2).

``CLIP score = mean over frames of max(100·cos(E_img(frame), E_txt(prompt)), 0)``.

Weights come from ``weights=PATH`` (a ``.safetensors`` file: nothing is unpickled) or from the
local Hugging Face cache of the model's default open_clip release (``open_clip_model.safetensors``). Nothing is downloaded: a missing file is a :class:`ClipWeightsNotFound` naming the
repository, the file and the command that fetches it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_RELEASE = {"ViT-B-32": "laion2b_s34b_b79k", "ViT-H-14": "laion2b_s32b_b79k", "ViT-L-14": "laion2b_s32b_b82k"}
WEIGHT_FILES = ("open_clip_model.safetensors",)


class ClipWeightsNotFound(FileNotFoundError):
    """CLIP weights are not on this machine; the message says what to fetch."""


def _hub_weights(model_name: str) -> Path:
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    tag = DEFAULT_RELEASE.get(model_name)
    cfg = open_clip.get_pretrained_cfg(model_name, tag) if tag else {}
    repo = (cfg.get("hf_hub") or "").rstrip("/")
    if not repo:
        raise ClipWeightsNotFound(f"no default open_clip release known for {model_name!r}; pass --clip-weights PATH")
    for name in WEIGHT_FILES:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    raise ClipWeightsNotFound(
        f"CLIP weights for {model_name} ({tag}) are not in the local Hugging Face cache. Fetch them where you have "
        f"network access:\n    huggingface-cli download {repo} {WEIGHT_FILES[0]}\n"
        f"then copy the cache here or pass --clip-weights /path/to/{WEIGHT_FILES[0]}")


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def preprocess_config(model_name: str, release: str | None = None, model=None) -> dict:
    """The image preprocessing a release was trained with (open_clip's pretrained config: mean, std,
    interpolation, resize mode) — e.g. ViT-L-14 ``laion2b_s32b_b82k`` uses mean = std = 0.5, not OpenAI's.
    Without a known release: the model config's own (``model.visual.preprocess_cfg``)."""
    import open_clip

    release = release or DEFAULT_RELEASE.get(model_name)
    cfg = open_clip.get_pretrained_cfg(model_name, release) if release else {}
    base = dict(getattr(getattr(model, "visual", None), "preprocess_cfg", {}) or {})
    out = {"mean": tuple(cfg.get("mean") or base.get("mean") or OPENAI_MEAN),
           "std": tuple(cfg.get("std") or base.get("std") or OPENAI_STD),
           "interpolation": cfg.get("interpolation") or base.get("interpolation") or "bicubic",
           "resize_mode": cfg.get("resize_mode") or base.get("resize_mode") or "shortest",
           "release": release if cfg else None}
    if out["resize_mode"] not in ("shortest", "squash"):
        raise ValueError(f"open_clip {model_name} ({release}): resize mode {out['resize_mode']!r} is not supported")
    return out


def resize_and_crop(frames: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic",
                    resize_mode: str = "shortest") -> torch.Tensor:
    """Frames ``(N, 3, H, W)`` in [0, 1] → ``(N, 3, *size)`` as open_clip's eval transform does it:
    ``Resize(shortest side)`` then ``CenterCrop`` (torchvision's rules for the long side and the crop
    offset), antialiased; ``squash`` resizes straight to ``size``."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.BICUBIC
    if resize_mode == "squash":
        return TF.resize(frames, list(size), interpolation=mode, antialias=True).clamp(0, 1)
    side = size[0] if size[0] == size[1] else max(size)
    x = TF.resize(frames, side, interpolation=mode, antialias=True)
    return TF.center_crop(x, list(size)).clamp(0, 1)


@dataclass
class CLIPScorer:
    model: torch.nn.Module
    tokenizer: object
    name: str
    weights: Path
    weights_sha256: str
    preprocess: dict | None = None  # preprocess_config(...): mean, std, interpolation, resize mode, release

    def __post_init__(self):
        if self.preprocess is None:
            self.preprocess = preprocess_config(self.name, model=self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def frame_features(self, videos: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
        """``(B, 3, F, H, W)`` in ``value_range`` (the harness's [−1, 1]) → normalised image features
        ``(B, F, D)``, each frame preprocessed as the release's own open_clip transform does it."""
        check_range(videos, value_range)
        b, _, f, h, w = videos.shape
        lo, hi = value_range
        frames = ((videos.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w).float() - lo) / (hi - lo)).to(self.device)
        size = self.model.visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        pp = self.preprocess
        x = resize_and_crop(frames, size, pp["interpolation"], pp["resize_mode"])
        mean = torch.tensor(pp["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(pp["std"], device=x.device).view(1, 3, 1, 1)
        feats = self.model.encode_image((x - mean) / std).float()
        return F.normalize(feats, dim=-1).view(b, f, -1)

    def score(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Per-clip CLIP score ``(B,)``: frame-averaged ``max(100·cos, 0)``."""
        if len(videos) != len(prompts):
            raise ValueError(f"{len(videos)} clips for {len(prompts)} prompts")
        cos = torch.einsum("bfd,bd->bf", self.frame_features(videos), self.text_features(prompts))
        return (100 * cos).clamp_min(0).mean(1)


def check_range(videos: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> None:
    """Clips must lie in ``value_range``; a batch with no value below the midpoint of [−1, 1] is most likely
    [0, 1] images handed over as [−1, 1] clips, which would be scored silently wrong: warn."""
    import warnings

    lo, hi = value_range
    vmin, vmax = float(videos.min()), float(videos.max())
    tol = 1e-3 * (hi - lo)
    if vmin < lo - tol or vmax > hi + tol or videos.isnan().any():
        raise ValueError(f"CLIP score: clips must lie in [{lo:g}, {hi:g}], these span [{vmin:.3g}, {vmax:.3g}]")
    if value_range == (-1.0, 1.0) and vmin >= 0.0:
        warnings.warn("CLIP score: every value of these clips is ≥ 0; if they are [0, 1] images, pass "
                      "value_range=(0, 1) (the harness's clips are [−1, 1])", stacklevel=3)


def load_clip(model_name: str = "ViT-B-32", weights: str | Path | None = None, device="cpu",
              release: str | None = None) -> CLIPScorer:
    """An open_clip model by name with local weights (see module docstring)."""
    import open_clip
    from safetensors.torch import load_file

    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; e.g. ViT-B-32, ViT-H-14")
    path = Path(weights).expanduser() if weights else _hub_weights(model_name)
    if not path.is_file():
        raise ClipWeightsNotFound(f"--clip-weights {path}: no such file")
    if path.suffix != ".safetensors":
        raise ValueError(f"--clip-weights {path}: only .safetensors weights are loaded (nothing is unpickled); "
                         f"open_clip releases ship {WEIGHT_FILES[0]}")
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"{path} does not fit open_clip {model_name}: {first}") from None
    model.to(device).eval().requires_grad_(False)
    return CLIPScorer(model, open_clip.get_tokenizer(model_name), model_name, path, file_hash(path),
                      preprocess_config(model_name, release, model))
