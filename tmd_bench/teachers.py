"""Teachers: one adapter over the diffusers Wan layout, for the Shapes teacher and Wan2.1 alike.

A teacher folder has the diffusers layout ``transformer/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``, optionally ``vae/`` (absent: identity codec, pixel space) and ``model_index.json``.
``tmd_bench.json`` beside them, when present, records the world, the video size and sampling
defaults. The same :func:`load_teacher` serves ``--teacher shapes`` (shipped with the package),
``--teacher wan2.1-1.3b`` / ``wan2.1-14b`` (Hugging Face cache) and ``--teacher-path DIR``.

Nothing here touches the network: Hub look-ups are ``local_files_only``, and a missing
checkpoint is a :class:`TeacherNotFound` whose message says what to download and how.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tmd_bench.registry import (  # noqa: F401 - re-exported: the torch-free half of this module
    ASSETS, META_FILE, SHAPES_TEACHER_DIR, TEACHERS, WAN_NEGATIVE_PROMPT, TeacherNotFound, TeacherSpec, get_spec,
    read_geometry, read_json, require_safetensors, resolve_spec, resolve_teacher_dir, scheduler_config,
    scheduler_defaults,
)


def compute_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype a network computes in.

    diffusers keeps some modules in float32 whatever the load dtype (``_keep_in_fp32_modules``:
    Wan's ``scale_shift_table``, ``time_embedder``, norms), so "the first parameter's dtype" is
    wrong for a bf16 Wan transformer; ``ModelMixin.dtype`` skips those modules. Wrappers of ours
    (TMD/MeanFlow students) expose the transformer they wrap."""
    inner = getattr(module, "transformer", None)
    if isinstance(inner, torch.nn.Module) and inner is not module:
        return compute_dtype(inner)
    dtype = getattr(module, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    return next(p.dtype for p in module.parameters() if p.is_floating_point())


def wan_timestep(t: torch.Tensor) -> torch.Tensor:
    """Flow time t ∈ [0, 1] → Wan's timestep ``1000·t`` in float32, never in the compute dtype:
    bf16 holds 999 as 1000 and 875 as 876, and WanPipeline feeds the scheduler's timesteps
    (int64 / float32) to the network, which embeds them in float32."""
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return (1000 * t).to(torch.float32)  # t float64 (the schedulers' timestep / 1000): exact


def clean_prompt(text: str) -> str:
    """Clean a prompt exactly as diffusers' WanPipeline does (ftfy when installed, HTML unescape,
    whitespace) by calling its own function."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return prompt_clean(text)


class IdentityCodec(torch.nn.Module):
    """Pixel-space 'codec' of the Shapes teacher: latents are the video."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        return videos.clamp(-1, 1)


class WanCodec(torch.nn.Module):
    """AutoencoderKLWan with Wan's per-channel latent normalisation (as in diffusers' WanPipeline)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        z = latents.to(self.vae.dtype) * std.to(self.vae.dtype) + mean.to(self.vae.dtype)
        return self.vae.decode(z, return_dict=False)[0].clamp(-1, 1)

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        """Videos ``(B, 3, F, H, W)`` in [−1, 1] → normalised latents ``(z − mean) / std``, z the
        posterior mean (deterministic; what ``decode`` inverts)."""
        cfg = self.vae.config
        z = self.vae.encode(videos.to(self.vae.dtype), return_dict=False)[0].mode()
        mean = torch.tensor(cfg.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        return (z - mean) / std


@dataclass
class Teacher:
    """The teacher adapter every sampler, method and metric goes through."""

    spec: TeacherSpec
    transformer: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    codec: torch.nn.Module
    path: Path | None = None
    meta: dict = field(default_factory=dict)
    scheduler_config: dict | None = None  # the checkpoint's scheduler/scheduler_config.json, if any
    _hash: str | None = field(default=None, repr=False)  # the weights do not change once loaded
    # Wan2.2 A14B's low-noise expert (``transformer`` is then the high-noise one); None: one network
    transformer_2: torch.nn.Module | None = None
    lockstep: bool = False  # both experts run at every call (FSDP2 shards them: see ``route``)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's compute dtype (bf16 for a bf16 Wan even though diffusers keeps its
        norms and modulation tables in float32); latents and solver state stay float32."""
        return compute_dtype(self.transformer)

    @property
    def num_blocks(self) -> int:
        return len(self.transformer.blocks)

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    def latent_shape(self, batch: int, frames: int | None = None, height: int | None = None,
                     width: int | None = None) -> tuple[int, ...]:
        f, h, w = frames or self.spec.frames, height or self.spec.height, width or self.spec.width
        st, sh, sw = self.spec.vae_stride
        return (batch, self.latent_channels, (f - 1) // st + 1, h // sh, w // sw)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """UMT5 embeddings ``(B, max_sequence_length, D)``, zero past each prompt's end (Wan's
        convention, from diffusers' WanPipeline)."""
        n = self.spec.max_sequence_length
        prompts = [clean_prompt(p) for p in prompts]
        tok = self.tokenizer(prompts, padding="max_length", max_length=n, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        hidden = self.text_encoder(ids, mask).last_hidden_state.to(self.dtype)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    @property
    def boundary_timestep(self) -> float | None:
        """Wan2.2 A14B: the timestep (of 1000) at and above which the high-noise expert runs."""
        if self.transformer_2 is None or self.spec.boundary_ratio is None:
            return None
        n = (self.scheduler_config or {}).get("num_train_timesteps", 1000)
        return self.spec.boundary_ratio * n

    @property
    def experts(self) -> list[torch.nn.Module]:
        """The networks that compute the velocity: one, or A14B's high- and low-noise experts."""
        return [self.transformer] if self.transformer_2 is None else [self.transformer, self.transformer_2]

    def high_noise(self, t: torch.Tensor) -> torch.Tensor:
        """Per row of ``t`` (flow time), whether the high-noise expert owns it (WanPipeline's rule
        ``timestep >= boundary_ratio · num_train_timesteps``, on the timestep the network sees)."""
        b = self.boundary_timestep
        ts = wan_timestep(t)
        return torch.ones_like(ts, dtype=torch.bool) if b is None else ts >= b

    def guidance_for(self, t: torch.Tensor, guidance: float) -> float | torch.Tensor:
        """The CFG scale of the expert that owns each row of ``t``: ``guidance`` for the high-noise
        expert (or the only network), ``guidance · guidance_2 / guidance_preset`` for the low-noise one
        (the checkpoint's own ratio: 4 and 3 at A14B's defaults). A float when every row agrees."""
        if self.transformer_2 is None:
            return guidance
        low = guidance * (self.spec.guidance_2 or self.spec.guidance) / self.spec.guidance
        high = self.high_noise(t)
        if bool(high.all()):
            return guidance
        if not bool(high.any()):
            return low
        return torch.where(high, torch.tensor(guidance), torch.tensor(low)).to(torch.float32)

    def route(self, t: torch.Tensor) -> list[tuple[torch.nn.Module, torch.Tensor | None, bool]]:
        """``(expert, rows, used)`` for the rows of a batch at times ``t`` (rows None: every row).

        ``lockstep`` (set when FSDP2 shards both experts): every process runs both experts at every call,
        since a sharded network's forward and backward are collectives that all processes must join. An
        expert that owns no row of this process's batch then runs on row 0 with ``used`` False: callers
        add its output times zero, so that its backward runs too."""
        if self.transformer_2 is None:
            return [(self.transformer, None, True)]
        high = self.high_noise(t.expand(1) if t.ndim == 0 else t)
        if not self.lockstep:
            if bool(high.all()):
                return [(self.transformer, None, True)]
            if not bool(high.any()):
                return [(self.transformer_2, None, True)]
        out = []
        for net, rows in ((self.transformer, high.nonzero().flatten()), (self.transformer_2, (~high).nonzero().flatten())):
            out.append((net, rows, True) if rows.numel() else (net, torch.zeros(1, dtype=torch.long), False))
        return out

    def timestep_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is given as timestep: ``1000·t`` per clip, or (Wan2.2 TI2V, WanPipeline's
        ``expand_timesteps``) the same value for every latent token, ``(B, F·H/2·W/2)``."""
        ts = wan_timestep(t).to(x.device)
        if not self.spec.expand_timesteps:
            return ts
        p_t, p_h, p_w = self.transformer.config.patch_size
        tokens = (x.shape[2] // p_t) * (x.shape[3] // p_h) * (x.shape[4] // p_w)
        return ts[:, None].expand(-1, tokens)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Teacher velocity ``v(x_t, t, c) ≈ E[x1 − x | x_t]``; t in [0, 1] (Wan takes 1000·t, in
        float32). The network runs in the compute dtype; what it returns is in that dtype too. A
        two-expert teacher runs each row through the expert that owns its timestep."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        dtype = self.dtype
        parts = self.route(t)
        if len(parts) == 1:
            net = parts[0][0]
            return net(x.to(dtype), self.timestep_input(x, t), text.to(dtype), return_dict=False)[0]
        return combine_rows(x.shape[0], [
            (rows, used, net(x[rows].to(dtype), self.timestep_input(x[rows], t[rows]), text[rows].to(dtype),
                             return_dict=False)[0]) for net, rows, used in parts])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(latents)

    @torch.no_grad()
    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        """Videos ``(B, 3, F, H, W)`` in [−1, 1] → latents in the teacher's dtype (the inverse of ``decode``)."""
        return self.codec.encode(videos).to(self.dtype)

    def checkpoint_hash(self) -> str:
        """Hash of the transformer's files on disk, computed once per teacher (every run card and
        every exported student records it)."""
        if self.path is None:
            return "unsaved"
        if self._hash is None:
            self._hash = weights_hash(self.path / "transformer")
            if self.transformer_2 is not None:  # A14B: both experts' weights identify the teacher
                second = weights_hash(self.path / "transformer_2")
                sampled = "s" if self._hash.startswith("s") or second.startswith("s") else ""  # hex has no s
                self._hash = sampled + hashlib.sha256((self._hash + second).encode()).hexdigest()[:16]
        return self._hash

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Write the diffusers layout (safetensors everywhere) plus ``tmd_bench.json``."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        _quiet_hub_progress()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        self.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        FlowMatchEulerDiscreteScheduler(shift=self.spec.shift).save_pretrained(folder / "scheduler")
        index = {
            "_class_name": "WanPipeline",
            "_diffusers_version": _version("diffusers"),
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "vae": [None, None],
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        spec = {k: v for k, v in asdict(self.spec).items() if k not in ("name", "description", "repo_id")}
        (folder / META_FILE).write_text(json.dumps({"teacher": self.spec.name, **spec, **(meta or {})}, indent=2))
        self.path, self._hash = folder, None
        return folder


def combine_rows(batch: int, parts: list[tuple[torch.Tensor, bool, torch.Tensor]]) -> torch.Tensor:
    """One batch from per-expert outputs ``(rows, used, output)``; an unused output (lockstep) enters
    times zero, so that autograd still runs its expert's backward."""
    out, dummy = None, None
    for rows, used, v in parts:
        if out is None:
            out = v.new_zeros((batch, *v.shape[1:]))
        if used:
            out = out.index_put((rows,), v)
        else:
            dummy = v.sum() * 0 if dummy is None else dummy + v.sum() * 0
    return out if dummy is None else out + dummy.to(out.dtype)


def load_teacher(name: str = "shapes", path: str | Path | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> Teacher:
    """Load a teacher from its diffusers folder (see module docstring). Never downloads."""
    from diffusers import WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    _quiet_hub_progress()
    folder, spec, meta = resolve_spec(name, path)
    transformer = load_component(WanTransformer3DModel, folder, "transformer", dtype)
    text_encoder = load_component(UMT5EncoderModel, folder, "text_encoder", dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{folder / 'tokenizer'}: the tokenizer cannot be read ({str(e).splitlines()[0][:200]})") from None
    transformer_2 = None
    if spec.boundary_ratio is not None:  # registry.pipeline_options checked transformer_2/ is there
        transformer_2 = load_component(WanTransformer3DModel, folder, "transformer_2", dtype)
        if transformer_2.config.in_channels != transformer.config.in_channels or \
                len(transformer_2.blocks) != len(transformer.blocks):
            raise ValueError(f"{folder}: transformer and transformer_2 differ in architecture (two experts of one "
                             "model share it)")
    if (folder / "vae").is_dir():
        codec: torch.nn.Module = WanCodec(load_wan_vae(folder))
    else:
        codec = IdentityCodec()
    for module in (transformer, text_encoder, codec, *([transformer_2] if transformer_2 is not None else [])):
        module.to(device).eval().requires_grad_(False)
    return Teacher(spec, transformer, text_encoder, tokenizer, codec, folder, meta, scheduler_config(folder),
                   transformer_2=transformer_2)


def load_wan_vae(folder: Path):
    """``folder/vae`` in float32 whatever the compute dtype: the Wan VAE's causal convolutions are
    sensitive to bf16 (teachers, student pipelines and their referenced components all decode so)."""
    from diffusers import AutoencoderKLWan

    return load_component(AutoencoderKLWan, folder, "vae", torch.float32)


def load_component(cls, folder: Path, sub: str, dtype: torch.dtype):
    """``cls.from_pretrained(folder, subfolder=sub)`` from safetensors only (never a pickled .bin); missing,
    corrupt or truncated weights are one clear error naming the folder (teachers and students alike).
    from_pretrained draws a random initialisation that the weights then overwrite: it runs under
    ``fork_rng``, so loading neither reads nor advances the global RNG (runs stay reproducible)."""
    part = folder / sub
    require_safetensors(part)
    try:
        with torch.random.fork_rng(devices=[]):
            return cls.from_pretrained(folder, subfolder=sub, torch_dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"{part}: the weights cannot be read ({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError
        if type(e).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{part}: the weights are corrupt or truncated ({e})") from None


def weights_hash(folder: Path) -> str:
    """sha256 over a folder's safetensors files (names and bytes); 16 hex digits.

    Files over 256 MiB are hashed by size plus their first and last 16 MiB, so hashing a 14B
    checkpoint takes a second, not minutes; the prefix ``s`` marks such a sampled hash.
    """
    h, sampled = hashlib.sha256(), False
    for f in sorted(Path(folder).rglob("*.safetensors")):
        h.update(f.name.encode())
        size = f.stat().st_size
        with open(f, "rb") as fh:
            if size > 256 << 20:
                sampled = True
                h.update(str(size).encode())
                h.update(fh.read(16 << 20))
                fh.seek(-(16 << 20), 2)
                h.update(fh.read())
            else:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return ("s" if sampled else "") + h.hexdigest()[:16]


def _quiet_hub_progress() -> None:
    """diffusers/transformers draw tqdm bars for every save and load; ours are rich bars."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


# The transformer configs of the Wan2.1 T2V checkpoints (their transformer/config.json), for
# random-weight benchmarks: same compute as the real weights, no download.
WAN_TRANSFORMER_CONFIGS = {
    "wan2.1-1.3b": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    "wan2.1-14b": dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16,
                       out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                       cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    # Wan2.2: TI2V-5B (48 latent channels, 24 heads); A14B's two experts are each a Wan2.1-14B-shaped network
    "wan2.2-ti2v-5b": dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
                           out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
                           cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
}
WAN_TRANSFORMER_CONFIGS["wan2.2-t2v-a14b"] = WAN_TRANSFORMER_CONFIGS["wan2.1-14b"]


class RandomTextEncoder(torch.nn.Module):
    """Stands in for UMT5-XXL in random-weight speed benchmarks: random embeddings of the right shape."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids, mask=None):
        from types import SimpleNamespace

        g = torch.Generator().manual_seed(0)
        return SimpleNamespace(last_hidden_state=torch.randn(*ids.shape, self.dim, generator=g).to(self.anchor.device))


def random_wan_teacher(name: str, device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16) -> Teacher:
    """A Wan2.1 teacher with random weights and the exact architecture (labelled as such in results)."""
    from diffusers import WanTransformer3DModel

    if name not in WAN_TRANSFORMER_CONFIGS:
        raise ValueError(f"--random-weights is for {', '.join(WAN_TRANSFORMER_CONFIGS)}, not {name!r}")
    spec = TEACHERS[name]
    with torch.device(device):
        transformer = WanTransformer3DModel(**WAN_TRANSFORMER_CONFIGS[name]).to(dtype).eval().requires_grad_(False)
        second = (WanTransformer3DModel(**WAN_TRANSFORMER_CONFIGS[name]).to(dtype).eval().requires_grad_(False)
                  if spec.boundary_ratio is not None else None)  # A14B: the low-noise expert
    tokenizer = build_tokenizer(["a"], spec.max_sequence_length)
    return Teacher(spec, transformer, RandomTextEncoder(4096).to(device), tokenizer, IdentityCodec(),
                   meta={"random_weights": True}, transformer_2=second)


# ---------------------------------------------------------------------------------------------
# Building the Shapes teacher from scratch (what `tmd-bench teacher train` starts from)

SHAPES_TRANSFORMER_CONFIG = dict(
    patch_size=(2, 4, 4), num_attention_heads=4, attention_head_dim=32, in_channels=3, out_channels=3,
    text_dim=64, freq_dim=256, ffn_dim=512, num_layers=8, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
SHAPES_TEXT_CONFIG = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                          relative_attention_num_buckets=8, relative_attention_max_distance=16,
                          dropout_rate=0.0, feed_forward_proj="gated-gelu")


def build_tokenizer(words: list[str], max_length: int):
    """A word-level tokenizer over ``words``, built offline with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


def umt5_style_tokenizer(words: list[str], max_length: int = 512):
    """A T5/UMT5-style tokenizer (SentencePiece Unigram with ``▁`` word pieces, ``</s>`` appended,
    ``<pad>`` = 0, character fallback so any prompt tokenizes), built offline with the ``tokenizers``
    library and wrapped in transformers' class: what a tiny stand-in for Wan's UMT5 tokenizer needs
    (tests, the GPU check's random-weight checkpoint)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(dict.fromkeys(words))]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.;:'&<>/()-"] + [("▁", -4.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=max_length)


def build_teacher(spec: TeacherSpec, transformer_config: dict, text_config: dict, words: list[str],
                  seed: int = 0) -> Teacher:
    """A randomly initialised Wan-architecture teacher with a frozen random UMT5 text encoder."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer(words, spec.max_sequence_length)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0, **text_config)).eval()
    text_encoder.requires_grad_(False)
    transformer = WanTransformer3DModel(**transformer_config)
    return Teacher(spec, transformer, text_encoder, tokenizer, IdentityCodec())


def build_shapes_teacher(seed: int = 0) -> Teacher:
    from tmd_bench import world

    return build_teacher(TEACHERS["shapes"], SHAPES_TRANSFORMER_CONFIG, SHAPES_TEXT_CONFIG,
                         world.vocabulary(), seed)
