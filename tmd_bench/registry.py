"""What a teacher is and where its files are, read from JSON alone: no torch, diffusers or transformers.

Every command resolves and validates its teacher here *before* importing the heavy libraries, so a
missing checkpoint, a wrong size or a bad option fails in well under a second:

- :data:`TEACHERS` / :func:`get_spec`: the known teachers and their presets;
- :func:`resolve_teacher_dir`: the local folder (shipped, ``--teacher-path`` or the Hugging Face
  cache, never the network);
- :func:`read_geometry`: VAE strides and patch size from ``vae/config.json`` and
  ``transformer/config.json``, and :func:`check_size`, which refuses a video size the VAE and the
  patching cannot represent (as ``WanPipeline`` would silently round it);
- :func:`scheduler_defaults`: the shift and solver the checkpoint's ``scheduler/`` config names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
SHAPES_TEACHER_DIR = ASSETS / "shapes-teacher"
META_FILE = "tmd_bench.json"

# Wan2.1's default negative prompt (from the Wan repository), used for CFG on Wan teachers.
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, "
    "static, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, "
    "extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, "
    "fused fingers, still picture, messy background, three legs, many people in the background, "
    "walking backwards"
)

DTYPES = ("float32", "bfloat16", "float16")


class TeacherNotFound(FileNotFoundError):
    """A teacher's files are not on this machine. The message says how to get them."""


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher is and how it samples by default."""

    name: str
    description: str
    repo_id: str | None = None  # Hugging Face repository of the diffusers-format checkpoint
    world: str | None = None  # "shapes" when the Shapes oracle can score its samples
    frames: int = 81
    height: int = 480
    width: int = 832
    fps: int = 16  # Wan2.1 generates 16 frames per second
    shift: float = 5.0  # Wan's sampling shift (fallback when the checkpoint's scheduler/ names none)
    guidance: float = 5.0  # CFG scale
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    max_sequence_length: int = 512
    vae_stride: tuple[int, int, int] = (4, 8, 8)  # (time, height, width); (1, 1, 1) = identity codec
    solver: str = "unipc"  # the checkpoint's own scheduler when it names one (WanPipeline's default)
    sampling_source: str = "preset"  # where shift and solver came from: option, checkpoint, tmd_bench.json, preset
    # Wan2.2 A14B: two experts, `transformer` for timesteps ≥ boundary_ratio·1000 (high noise) and
    # `transformer_2` below (low noise), each with its own CFG scale (guidance, guidance_2); read from
    # the checkpoint's model_index.json as WanPipeline reads them
    boundary_ratio: float | None = None
    guidance_2: float | None = None
    # Wan2.2 TI2V-5B: the timestep given per latent token (WanPipeline's expand_timesteps), not per clip
    expand_timesteps: bool = False


TEACHERS: dict[str, TeacherSpec] = {
    "shapes": TeacherSpec(
        name="shapes",
        description="Wan-architecture miniature trained on the Shapes world (ships with tmd-bench)",
        world="shapes",
        frames=8, height=24, width=24, fps=8,
        shift=3.0, guidance=4.0, negative_prompt="", max_sequence_length=16,
        vae_stride=(1, 1, 1), solver="euler",
    ),
    "wan2.1-1.3b": TeacherSpec(
        name="wan2.1-1.3b",
        description="Wan2.1 text-to-video 1.3B (diffusers format)",
        repo_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    ),
    "wan2.1-14b": TeacherSpec(
        name="wan2.1-14b",
        description="Wan2.1 text-to-video 14B (diffusers format)",
        repo_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
    ),
    # Wan2.2's own configs (Wan2.2 repository, wan/configs): ti2v-5B samples 121 frames at 704×1280 and
    # 24 fps with shift 5 and CFG 5; its VAE compresses 16× in space, 4× in time, into 48 channels
    "wan2.2-ti2v-5b": TeacherSpec(
        name="wan2.2-ti2v-5b",
        description="Wan2.2 text/image-to-video 5B, text-to-video mode (diffusers format)",
        repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        frames=121, height=704, width=1280, fps=24, shift=5.0, guidance=5.0, vae_stride=(4, 16, 16),
        expand_timesteps=True,
    ),
    # t2v-A14B: 81 frames at 720×1280, 16 fps, shift 12; the high-noise expert at CFG 4, the low-noise
    # expert at CFG 3, switched at boundary 0.875
    "wan2.2-t2v-a14b": TeacherSpec(
        name="wan2.2-t2v-a14b",
        description="Wan2.2 text-to-video A14B: two 14B experts, high and low noise (diffusers format)",
        repo_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        frames=81, height=720, width=1280, fps=16, shift=12.0, guidance=4.0, guidance_2=3.0,
        boundary_ratio=0.875,
    ),
}


# The distillation presets of Wan2.2 teachers are the paper's Wan2.1 recipes of the matching network
# (the paper trains no Wan2.2 student): TI2V-5B is a 30-block dense transformer like 1.3B and takes the
# 1.3B recipe; A14B's experts are 40-block 14B networks and take the 14B recipe, with Wan2.1's CFG 5
# replaced by the high-noise expert's own 4 (the low-noise expert then runs at 3, its checkpoint's ratio).
WAN22_PRESET_BASIS = {"wan2.2-ti2v-5b": ("wan2.1-1.3b", None), "wan2.2-t2v-a14b": ("wan2.1-14b", 4.0)}


def derived_presets(presets: dict) -> dict:
    """Wan2.2 entries for a method's ``PRESETS`` (see :data:`WAN22_PRESET_BASIS`)."""
    from dataclasses import fields, replace

    out = {}
    for name, (basis, guidance) in WAN22_PRESET_BASIS.items():
        if basis not in presets:
            continue
        cfg = presets[basis]
        have = {f.name for f in fields(cfg)}
        over = {}
        if guidance is not None:
            over.update({k: guidance for k in ("teacher_guidance",) if k in have})
            if getattr(cfg, "omega", None) == TEACHERS[basis].guidance:  # a CFG scale baked into the target
                over["omega"] = guidance
        out[name] = replace(cfg, **over)
    return out


def get_spec(name: str) -> TeacherSpec:
    try:
        return TEACHERS[name]
    except KeyError:
        raise ValueError(f"unknown teacher {clip_text(name)!r}; known teachers: {', '.join(TEACHERS)}") from None


def clip_text(text: object, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for an error message (input is echoed bounded)."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def resolve_teacher_dir(name: str, path: str | Path | None = None) -> Path:
    """The local folder holding ``name``'s files, without any network access."""
    spec = get_spec(name)
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise TeacherNotFound(f"--teacher-path {folder}: no such folder")
    elif name == "shapes":
        folder = SHAPES_TEACHER_DIR
        if not (folder / "transformer").is_dir():
            raise TeacherNotFound(
                f"the shipped shapes teacher is missing from {folder}; "
                "recreate it with `tmd-bench teacher train --export`"
            )
    else:
        folder = _hub_cache_dir(spec)
    missing = [p for p in ("transformer/config.json", "text_encoder", "tokenizer") if not (folder / p).exists()]
    if missing:
        hint = f" (the {spec.repo_id} layout)" if spec.repo_id else ""
        raise TeacherNotFound(
            f"{folder} is not a diffusers Wan checkpoint folder{hint}: missing {', '.join(missing)}"
        )
    require_safetensors(folder / "transformer")
    return folder


def require_safetensors(part: Path) -> None:
    """A model component folder must hold ``.safetensors`` weights: pickled ``.bin`` / ``.pt`` files are
    never loaded (a one-line error says they are there)."""
    if not list(part.glob("*.safetensors")):
        pickles = [f.name for f in part.glob("*.bin")] + [f.name for f in part.glob("*.pt")]
        extra = f"; it has {', '.join(pickles)}: pickle formats are never loaded" if pickles else ""
        raise TeacherNotFound(f"{part}: no .safetensors weights{extra}")


def _hub_cache_dir(spec: TeacherSpec) -> Path:
    """The snapshot of ``spec.repo_id`` in the local Hugging Face cache, looked up on disk only
    (the layout ``models--org--name/refs/main`` → ``snapshots/<sha>``), so that a missing teacher is
    reported without importing huggingface_hub and without any network access."""
    cache = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                 or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    repo = cache / ("models--" + spec.repo_id.replace("/", "--"))
    snapshot = None
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
    elif (repo / "snapshots").is_dir():
        found = sorted((repo / "snapshots").iterdir())
        snapshot = found[-1] if found else None
    if snapshot is None or not snapshot.is_dir():
        raise TeacherNotFound(
            f"teacher {spec.name!r} needs the checkpoint {spec.repo_id}, which is not in the local "
            f"Hugging Face cache ({cache}). Download it where you have network access: "
            f"`huggingface-cli download {spec.repo_id} --local-dir /path/to/{spec.name}`, "
            f"then pass --teacher-path /path/to/{spec.name} (or copy the Hugging Face cache here)."
        )
    return snapshot


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; a corrupt file is an error naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({clip_text(e, 120)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# Video geometry: what sizes the VAE and the patching can represent


@dataclass(frozen=True)
class Geometry:
    """Strides from pixels to tokens: the VAE's (time, height, width) and the transformer's patch."""

    vae_stride: tuple[int, int, int]
    patch_size: tuple[int, int, int]

    @property
    def multiple(self) -> tuple[int, int]:
        """Height and width must be multiples of these (VAE stride × patch)."""
        return self.vae_stride[1] * self.patch_size[1], self.vae_stride[2] * self.patch_size[2]


def read_geometry(folder: Path, spec: TeacherSpec) -> Geometry:
    """Strides from the checkpoint's configs (Wan2.1 VAE: 4× time, 8× space; patch (1, 2, 2))."""
    tcfg = read_json(folder / "transformer" / "config.json")
    patch = tuple(int(p) for p in tcfg.get("patch_size", (1, 2, 2)))
    vae_cfg = folder / "vae" / "config.json"
    if vae_cfg.is_file():
        v = read_json(vae_cfg)
        # diffusers' AutoencoderKLWan records its strides (WanPipeline reads the same keys, default 4 and 8)
        st, ss = int(v.get("scale_factor_temporal") or 4), int(v.get("scale_factor_spatial") or 8)
        stride = (st, ss, ss)
    else:
        stride = tuple(spec.vae_stride)
    return Geometry(stride, patch)  # type: ignore[arg-type]


def check_size(frames: int, height: int, width: int, geometry: Geometry, where: str = "") -> None:
    """Refuse a size the VAE and the patching cannot represent, naming the nearest valid values.

    Frames: ``1 + k·stride_t`` latent-compatible, with the latent frame count divisible by the
    temporal patch; height and width: multiples of VAE stride × patch (Wan2.1: 4k + 1 frames,
    multiples of 16)."""
    st = geometry.vae_stride[0]
    pt = geometry.patch_size[0]
    hm, wm = geometry.multiple
    problems = []
    if frames < 1 or height < 1 or width < 1:
        raise ValueError(f"{where}--frames, --height and --width must be ≥ 1, got {frames}, {height}, {width}")
    if st > 1:
        latent_f = (frames - 1) // st + 1
        if (frames - 1) % st or latent_f % pt:
            lo = max(1, (frames - 1) // (st * pt) * (st * pt) + 1)
            hi = lo + st * pt
            problems.append(f"--frames {frames} is not {st}k + 1 (nearest: {lo} or {hi})")
    elif frames % pt:
        lo, hi = max(pt, frames // pt * pt), frames // pt * pt + pt
        problems.append(f"--frames {frames} is not a multiple of {pt} (nearest: {lo} or {hi})")
    for flag, v, m in (("--height", height, hm), ("--width", width, wm)):
        if v % m:
            lo, hi = max(m, v // m * m), v // m * m + m
            problems.append(f"{flag} {v} is not a multiple of {m} (nearest: {lo} or {hi})")
    if problems:
        raise ValueError(f"{where}{'; '.join(problems)}: the VAE strides {geometry.vae_stride} and patch size "
                         f"{geometry.patch_size} need frames = {st}k + 1 and height/width multiples of {hm}/{wm}")


# ---------------------------------------------------------------------------------------------
# The checkpoint's own sampling defaults


SCHEDULER_SOLVERS = {"UniPCMultistepScheduler": "unipc", "FlowMatchEulerDiscreteScheduler": "fmeuler"}


def scheduler_config(folder: Path) -> dict | None:
    """The checkpoint's ``scheduler/scheduler_config.json`` (None when it has none)."""
    path = folder / "scheduler" / "scheduler_config.json"
    return read_json(path) if path.is_file() else None


def scheduler_defaults(folder: Path) -> dict:
    """``{"shift", "solver"}`` as far as the checkpoint's scheduler config names them."""
    cfg = scheduler_config(folder)
    if cfg is None:
        return {}
    out = {}
    solver = SCHEDULER_SOLVERS.get(cfg.get("_class_name", ""))
    if solver:
        out["solver"] = solver
    shift = cfg.get("flow_shift") if solver == "unipc" else cfg.get("shift")
    if shift is not None and not cfg.get("use_dynamic_shifting", False):
        out["shift"] = float(shift)
    return out


def resolve_spec(name: str, path: str | Path | None = None) -> tuple[Path, TeacherSpec, dict]:
    """``(folder, spec, meta)`` of a teacher, from its files' JSON alone (fast: no torch).

    Sampling defaults, in order of precedence: ``tmd_bench.json`` (what tmd-bench recorded when it
    wrote the checkpoint, e.g. the Shapes teacher), then the checkpoint's ``scheduler/`` config
    (shift and solver, as WanPipeline would use them), then the preset. ``spec.sampling_source``
    says which; ``--shift`` / ``--methods`` given on the command line override all three."""
    from dataclasses import replace

    spec = get_spec(name)
    folder = resolve_teacher_dir(name, path)
    meta = read_json(folder / META_FILE) if (folder / META_FILE).is_file() else {}
    overrides: dict = {}
    sched = scheduler_defaults(folder)
    if meta:  # a checkpoint tmd-bench wrote: its recorded solver (or the preset's) is the default
        sched.pop("solver", None)
    if sched:
        overrides.update(sched, sampling_source="checkpoint scheduler/scheduler_config.json")
    recorded = {k: meta[k] for k in ("world", "frames", "height", "width", "fps", "shift", "guidance",
                                     "negative_prompt", "max_sequence_length", "solver") if k in meta}
    if "shift" in recorded or "solver" in recorded:
        overrides["sampling_source"] = META_FILE
    overrides.update(recorded)
    geometry = read_geometry(folder, spec)
    overrides["vae_stride"] = tuple(meta["vae_stride"]) if "vae_stride" in meta else geometry.vae_stride
    overrides.update(pipeline_options(folder, spec))
    return folder, replace(spec, **overrides), meta


def pipeline_options(folder: Path, spec: TeacherSpec) -> dict:
    """What the checkpoint's ``model_index.json`` says about its experts and timesteps (WanPipeline's
    ``boundary_ratio`` and ``expand_timesteps``). A two-expert checkpoint must have ``transformer_2/``."""
    index_file = folder / "model_index.json"
    index = read_json(index_file) if index_file.is_file() else {}
    out: dict = {}
    if "expand_timesteps" in index:
        out["expand_timesteps"] = bool(index["expand_timesteps"])
    ratio = index.get("boundary_ratio", spec.boundary_ratio if not index else None)
    second = index.get("transformer_2", [None, None])
    has_second = isinstance(second, list) and second and second[0] is not None
    if ratio is not None:
        ratio = float(ratio)
        if not 0 < ratio < 1:
            raise ValueError(f"{index_file}: boundary_ratio {ratio} is not in (0, 1)")
        if not (folder / "transformer_2" / "config.json").is_file():
            raise TeacherNotFound(f"{folder}: boundary_ratio {ratio} names two experts, but transformer_2/ is missing")
        require_safetensors(folder / "transformer_2")
    elif has_second:
        raise ValueError(f"{index_file}: transformer_2 is listed without a boundary_ratio (WanPipeline would never run it)")
    out["boundary_ratio"] = ratio
    if ratio is None:
        out["guidance_2"] = None
    elif spec.guidance_2 is None:
        out["guidance_2"] = spec.guidance  # WanPipeline: guidance_scale_2 defaults to guidance_scale
    return out
