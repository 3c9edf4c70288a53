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


@dataclass
class CLIPScorer:
    model: torch.nn.Module
    tokenizer: object
    name: str
    weights: Path
    weights_sha256: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def frame_features(self, videos: torch.Tensor) -> torch.Tensor:
        """``(B, 3, F, H, W)`` in [−1, 1] → normalised image features ``(B, F, D)``."""
        b, _, f, h, w = videos.shape
        frames = videos.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w).float().to(self.device)
        size = self.model.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        x = F.interpolate((frames + 1) / 2, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=x.device).view(1, 3, 1, 1)
        feats = self.model.encode_image((x.clamp(0, 1) - mean) / std).float()
        return F.normalize(feats, dim=-1).view(b, f, -1)

    def score(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Per-clip CLIP score ``(B,)``: frame-averaged ``max(100·cos, 0)``."""
        if len(videos) != len(prompts):
            raise ValueError(f"{len(videos)} clips for {len(prompts)} prompts")
        cos = torch.einsum("bfd,bd->bf", self.frame_features(videos), self.text_features(prompts))
        return (100 * cos).clamp_min(0).mean(1)


def load_clip(model_name: str = "ViT-B-32", weights: str | Path | None = None, device="cpu") -> CLIPScorer:
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
    return CLIPScorer(model, open_clip.get_tokenizer(model_name), model_name, path, file_hash(path))
