"""Distilled students as diffusers pipelines: ``TMDPipeline`` and ``FewStepPipeline``.

Every student folder tmd-bench exports is also a diffusers pipeline folder::

    from tmd_bench import TMDPipeline
    pipe = TMDPipeline.from_pretrained("runs/tmd/stage2/student")
    frames = pipe("a red circle moving right", generator=torch.Generator().manual_seed(0)).frames

``model_index.json`` names the components (the student's ``transformer/``, TMD's ``tmd_head/`` or
MeanFlow's ``delta_time/``, and the teacher's ``text_encoder/``, ``tokenizer/`` and ``vae/``) and the
sampler's settings. The teacher's components are copied into the folder when they are small (the
Shapes teacher, tiny checkpoints); a Wan student *references* them instead (``teacher_components``:
UMT5-XXL alone is 11 GB), and ``from_pretrained`` loads them from the teacher's local folder or the
Hugging Face cache, never the network. Pass ``text_encoder=…``/``vae=…`` to override either way.

The sampler is the harness's own (``tmd_bench.distill``): a pipeline call and ``tmd-bench evaluate``
give the same video for the same prompt and seed (tested). Randomness follows tmd-bench's rule that
a clip is decided by its seed: the initial noise of clip i is drawn from ``generator[i]`` (as
``WanPipeline`` draws it), and the fresh noise some samplers draw later (TMD's inner noise, rCM's
re-noising) is derived from that generator's seed, ``generator.initial_seed()``. A single generator
for a batch seeds clip i with ``initial_seed() + i``.

Stock ``WanPipeline`` cannot run these students exactly: no scheduler it loads reproduces the
few-step grids (tmd-bench's ``shift(linspace(1, 0, k + 1))`` against FlowMatchEuler's
``shift(linspace(1, 1/1000, k))``), TMD's backbone/flow-head split, or the re-noising draws.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput

from tmd_bench import registry

# the teacher's components a student needs to run, and the classes model_index.json names them by
TEACHER_COMPONENTS = ("text_encoder", "tokenizer", "vae")
COPY_LIMIT_BYTES = 256 << 20  # components larger than this are referenced, not copied
STUDENT_CONFIGS = ("tmd_config.json", "student_config.json")


class TMDHead(ModelMixin, ConfigMixin):
    """The layers TMD adds to the teacher's transformer: the gated fusion block that brings ``y_s`` into
    the head, and the zero-initialised (s − r) time embedding (``tmd_bench.distill.tmd``)."""

    @register_to_config
    def __init__(self, dim: int, freq_dim: int):
        super().__init__()
        from tmd_bench.distill.tmd import DeltaTimeEmbedding, FusionBlock

        self.fusion = FusionBlock(dim)
        self.delta_time = DeltaTimeEmbedding(freq_dim, dim)


class MeanFlowTime(ModelMixin, ConfigMixin):
    """MeanFlow's (t − r) time embedding, added to Wan's embedding of t."""

    @register_to_config
    def __init__(self, dim: int, freq_dim: int):
        super().__init__()
        from tmd_bench.distill.tmd import DeltaTimeEmbedding

        self.delta_time = DeltaTimeEmbedding(freq_dim, dim)


def added_layers_config(transformer) -> dict:
    """The config of a layer group a method adds to a Wan transformer (``TMDHead``, ``MeanFlowTime``)."""
    tr = transformer.config
    return {"dim": tr.num_attention_heads * tr.attention_head_dim, "freq_dim": tr.freq_dim}


def write_component(folder: Path, cls: type, config: dict, state: dict[str, torch.Tensor]) -> None:
    """A component folder as ``cls.save_pretrained`` writes it (``config.json`` and
    ``diffusion_pytorch_model.safetensors``), from a state dict, without building the module."""
    from importlib.metadata import version

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(
        {"_class_name": cls.__name__, "_diffusers_version": version("diffusers"), **config}, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})


@dataclass
class StudentPipelineOutput(BaseOutput):
    """``frames``: as WanPipeline returns them (np: ``(B, F, H, W, 3)`` in [0, 1]; pt: ``(B, F, 3, H, W)``;
    latent: the latents)."""

    frames: object


class _StudentPipeline(DiffusionPipeline):
    """What every student pipeline shares: prompt encoding, seeded noise, decoding and output, and the
    loading of referenced teacher components."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["text_encoder", "tokenizer", "vae"]

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``, plus the teacher components the folder references (from the
        teacher's local folder or the Hugging Face cache: never the network)."""
        folder = Path(pretrained_model_name_or_path)
        index_file = folder / "model_index.json"
        if folder.is_dir() and not index_file.is_file():
            raise FileNotFoundError(f"{folder}: no model_index.json (not a student exported by this tmd-bench)")
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))  # diffusers' new name, and its deprecated one
        if index_file.is_file():
            index = registry.read_json(index_file)
            wanted = [c for c in str(index.get("teacher_components") or "").split(",")
                      if c and kwargs.get(c) is None]
            if wanted:
                kwargs.update(load_teacher_components(index, wanted, dtype))
            if dtype not in (None, torch.float32) and kwargs.get("vae") is None and (folder / "vae").is_dir():
                # a copied Wan VAE decodes in float32 whatever the load dtype, as the harness's teacher does:
                # loaded in bf16 and cast back it would not be the same weights
                from tmd_bench.teachers import load_wan_vae

                kwargs["vae"] = load_wan_vae(folder)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # -- the pieces of a call ------------------------------------------------------------------
    def _teacher(self):
        """A :class:`tmd_bench.teachers.Teacher` over this pipeline's components: the harness's own
        prompt encoding and codec (its transformer is the student's, for device and dtype)."""
        from tmd_bench.teachers import IdentityCodec, Teacher, WanCodec

        cfg = self.config
        spec = registry.TEACHERS.get(cfg.teacher) or registry.TEACHERS["wan2.1-1.3b"]
        spec = replace(spec, name=cfg.teacher, frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                       fps=cfg.fps, max_sequence_length=cfg.max_sequence_length,
                       vae_stride=tuple(cfg.vae_stride))
        codec = WanCodec(self.vae) if self.vae is not None else IdentityCodec()
        return Teacher(spec, self.transformer, self.text_encoder, self.tokenizer, codec)

    @staticmethod
    def _seeds(generator, batch: int) -> list[int]:
        if generator is None:
            return [int(s) for s in torch.randint(0, 2**31 - 1, (batch,)).tolist()]
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch:
                raise ValueError(f"{len(generator)} generators for {batch} videos: pass one per video, or one")
            return [int(g.initial_seed()) for g in generator]
        return [int(generator.initial_seed()) + i for i in range(batch)]

    def _sample(self, method, prompt, num_frames, height, width, steps, generator, latents, output_type,
                return_dict, num_videos_per_prompt):
        from tmd_bench import harness

        if output_type not in ("np", "pt", "pil", "latent"):
            raise ValueError(f"output_type {output_type!r}: expected np, pt, pil or latent")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_videos_per_prompt)]
        teacher = self._teacher()
        size = {k: v for k, v in (("frames", num_frames), ("height", height), ("width", width)) if v is not None}
        if size:
            registry.check_size(size.get("frames", teacher.spec.frames), size.get("height", teacher.spec.height),
                                size.get("width", teacher.spec.width),
                                registry.Geometry(teacher.spec.vae_stride, tuple(self.transformer.config.patch_size)))
            teacher.spec = replace(teacher.spec, **size)
        seeds = self._seeds(generator, len(prompts))
        noise = (latents.to(self.device, torch.float32) if latents is not None
                 else harness.noise_for_seeds(teacher, seeds))
        text = teacher.encode_text(prompts)
        x = method.sample(noise, text, None, steps, seeds)
        self.maybe_free_model_hooks()
        if output_type == "latent":
            frames = x
        else:
            from diffusers.video_processor import VideoProcessor

            video = teacher.decode(x).float()
            frames = VideoProcessor(vae_scale_factor=teacher.spec.vae_stride[1]).postprocess_video(
                video, output_type=output_type)
        return StudentPipelineOutput(frames=frames) if return_dict else (frames,)


class FewStepPipeline(_StudentPipeline):
    """A few-step student that is the whole Wan transformer: DMD2-v and KD (the x0 chain), rCM
    (TrigFlow re-noising) and MeanFlow (the mean-flow map, with its ``delta_time`` component).

    ``pipe(prompt, num_inference_steps=None, num_frames=None, height=None, width=None, generator=None,
    output_type="np")``: the step count defaults to the one the student was distilled for."""

    _optional_components = ["text_encoder", "tokenizer", "vae", "delta_time"]

    def __init__(self, transformer, text_encoder=None, tokenizer=None, vae=None, delta_time=None,
                 method: str = "dmd2", steps: int = 2, shift: float | None = None, sigma_max: float = 80.0,
                 teacher: str = "shapes", num_frames: int = 81, height: int = 480, width: int = 832,
                 fps: int = 16, max_sequence_length: int = 512, vae_stride: list | tuple = (4, 8, 8),
                 teacher_components: str = "", teacher_path: str | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
                              delta_time=delta_time)
        self.register_to_config(method=method, steps=steps, shift=shift, sigma_max=sigma_max, teacher=teacher,
                                num_frames=num_frames, height=height, width=width, fps=fps,
                                max_sequence_length=max_sequence_length, vae_stride=list(vae_stride),
                                teacher_components=teacher_components, teacher_path=teacher_path)

    def method(self):
        """The harness method this pipeline runs (built around its own components)."""
        from tmd_bench.distill.dmd2 import FullStudent, full_student_method

        cfg = self.config
        if cfg.method == "meanflow":
            from tmd_bench.distill.meanflow import MeanFlowStudent, meanflow_method

            student = MeanFlowStudent(self.transformer, {"steps": cfg.steps, "shift": cfg.shift})
            student.delta_time = self.delta_time.delta_time
            return meanflow_method(student)
        student = FullStudent(self.transformer, cfg.method, {"steps": cfg.steps, "shift": cfg.shift})
        if cfg.method == "rcm":
            from tmd_bench.distill.rcm import rcm_method

            return rcm_method(student, cfg.sigma_max)
        return full_student_method(student, cfg.method)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None, generator=None, latents=None,
                 output_type: str = "np", return_dict: bool = True, num_videos_per_prompt: int = 1):
        return self._sample(self.method(), prompt, num_frames, height, width, num_inference_steps or self.config.steps,
                            generator, latents, output_type, return_dict, num_videos_per_prompt)


class TMDPipeline(_StudentPipeline):
    """A TMD student (backbone + flow head, spec tmd.md §5): M outer steps, each one backbone pass and
    N flow-head steps. ``pipe(prompt, num_inference_steps=M, inner_steps=N, …)``; both default to
    the student's own."""

    _optional_components = ["text_encoder", "tokenizer", "vae"]

    def __init__(self, transformer, tmd_head, text_encoder=None, tokenizer=None, vae=None,
                 outer_steps: int = 2, inner_steps: int = 2, head_blocks: int = 5, outer_shift: float = 10.0,
                 inner_shift: float = 10.0, teacher: str = "shapes", num_frames: int = 81, height: int = 480,
                 width: int = 832, fps: int = 16, max_sequence_length: int = 512, vae_stride: list | tuple = (4, 8, 8),
                 teacher_components: str = "", teacher_path: str | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, tmd_head=tmd_head, text_encoder=text_encoder,
                              tokenizer=tokenizer, vae=vae)
        self.register_to_config(outer_steps=outer_steps, inner_steps=inner_steps, head_blocks=head_blocks,
                                outer_shift=outer_shift, inner_shift=inner_shift, teacher=teacher,
                                num_frames=num_frames, height=height, width=width, fps=fps,
                                max_sequence_length=max_sequence_length, vae_stride=list(vae_stride),
                                teacher_components=teacher_components, teacher_path=teacher_path)

    def method(self, inner_steps: int | None = None):
        from tmd_bench.distill.tmd import TMDConfig, TMDStudent, tmd_method

        cfg = self.config
        student = TMDStudent(self.transformer, TMDConfig(cfg.outer_steps, cfg.inner_steps, cfg.head_blocks,
                                                         cfg.outer_shift, cfg.inner_shift))
        student.fusion, student.delta_time = self.tmd_head.fusion, self.tmd_head.delta_time
        return tmd_method(student, inner_steps)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int | None = None, inner_steps: int | None = None,
                 num_frames: int | None = None, height: int | None = None, width: int | None = None,
                 generator=None, latents=None, output_type: str = "np", return_dict: bool = True,
                 num_videos_per_prompt: int = 1):
        return self._sample(self.method(inner_steps), prompt, num_frames, height, width,
                            num_inference_steps or self.config.outer_steps, generator, latents, output_type,
                            return_dict, num_videos_per_prompt)


# ---------------------------------------------------------------------------------------------
# Writing a student folder as a pipeline folder


def read_student_config(folder: Path) -> tuple[str, dict]:
    for name in STUDENT_CONFIGS:
        if (folder / name).is_file():
            return name, registry.read_json(folder / name)
    raise FileNotFoundError(f"{folder}: no {' or '.join(STUDENT_CONFIGS)} (not a tmd-bench student)")


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def write_pipeline_files(folder: str | Path, teacher, components: str = "auto", command: str | None = None) -> Path:
    """Make the student in ``folder`` a diffusers pipeline folder: ``model_index.json``, the teacher's
    components (copied, or referenced for large ones: ``components`` = auto | copy | reference) and a
    Hugging Face model card ``README.md``."""
    from importlib.metadata import version

    folder = Path(folder)
    _, meta = read_student_config(folder)
    method = meta["method"]
    spec = teacher.spec
    teacher_dir = Path(teacher.path) if teacher.path is not None else None
    from tmd_bench.teachers import WanCodec

    has_vae = isinstance(teacher.codec, WanCodec)
    present = [c for c in TEACHER_COMPONENTS if c != "vae" or has_vae]
    if components not in ("auto", "copy", "reference"):
        raise ValueError(f"components {components!r}: expected auto, copy or reference")
    if teacher_dir is None:
        components = "copy"  # a teacher never saved (a test's): its components are written from memory
    elif components == "auto":
        small = sum(_folder_bytes(teacher_dir / c) for c in present if (teacher_dir / c).is_dir()) <= COPY_LIMIT_BYTES
        components = "copy" if small else "reference"
    index = {"_class_name": "TMDPipeline" if method == "tmd" else "FewStepPipeline",
             "_diffusers_version": version("diffusers"), "_tmd_bench_version": version("tmd-bench"),
             "transformer": ["diffusers", "WanTransformer3DModel"]}
    own = registry.read_json(teacher_dir / "model_index.json") if teacher_dir and (teacher_dir / "model_index.json").is_file() else {}
    classes = {"text_encoder": ["transformers", type(teacher.text_encoder).__name__],
               "tokenizer": own.get("tokenizer") or ["transformers", "PreTrainedTokenizerFast"],
               "vae": ["diffusers", "AutoencoderKLWan"]}
    referenced = []
    memory = {"text_encoder": teacher.text_encoder, "tokenizer": teacher.tokenizer,
              "vae": teacher.codec.vae if has_vae else None}
    for c in TEACHER_COMPONENTS:
        if c not in present:
            index[c] = [None, None]  # the Shapes world is pixel space: no VAE
            continue
        if components == "copy":
            shutil.rmtree(folder / c, ignore_errors=True)
            if teacher_dir is not None and (teacher_dir / c).is_dir():
                shutil.copytree(teacher_dir / c, folder / c)  # byte for byte, in the checkpoint's own dtype
            else:
                memory[c].save_pretrained(folder / c)
            index[c] = classes[c]
        else:
            index[c] = [None, None]
            referenced.append(c)
    common = {"teacher": spec.name, "num_frames": spec.frames, "height": spec.height, "width": spec.width,
              "fps": spec.fps, "max_sequence_length": spec.max_sequence_length,
              "vae_stride": list(spec.vae_stride), "teacher_components": ",".join(referenced),
              "teacher_path": str(teacher_dir.resolve()) if referenced and teacher_dir is not None else None}
    if method == "tmd":
        index["tmd_head"] = ["tmd_bench.pipelines", "TMDHead"]
        index.update({k: meta[k] for k in ("outer_steps", "inner_steps", "head_blocks", "outer_shift", "inner_shift")})
    else:
        if method == "meanflow":
            index["delta_time"] = ["tmd_bench.pipelines", "MeanFlowTime"]
        index.update({"method": method, "steps": int(meta.get("steps") or 1), "shift": meta.get("shift"),
                      "sigma_max": float(meta.get("sigma_max", 80.0))})
    index.update(common)
    if command:
        index["_command"] = command  # diffusers ignores "_" keys; the model card shows it
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    write_model_card(folder, meta, index, spec, command, two_experts=getattr(teacher, "transformer_2", None) is not None)
    return folder


CARD_COLUMNS = ("row_id", "suite", "steps", "nfe_counted", "effective_nfe", "all_correct", "fd_real", "clip_score",
                "latency_total_s", "num_clips", "draws")


def card_results(results: str | Path, rows: list[str]) -> list[dict]:
    """The student's rows of a ``results.csv`` / ``report.csv``, as the model card shows them."""
    import pandas as pd

    try:
        df = pd.read_csv(results)
    except (OSError, ValueError) as e:
        raise ValueError(f"{results}: not a readable results table ({registry.clip_text(e, 120)})") from None
    if "row_id" not in df:
        raise ValueError(f"{results}: no row_id column (not a tmd-bench results table)")
    missing = [r for r in rows if r not in set(df["row_id"])]
    if missing:
        raise ValueError(f"{results}: no row {', '.join(map(repr, missing))} (it has {', '.join(df['row_id'][:8])}…)")
    out = []
    for r in rows:
        row = df[df["row_id"] == r].iloc[0]
        cell = {}
        for c in CARD_COLUMNS:
            if c not in row or pd.isna(row[c]):
                continue
            v = row[c]
            if c == "all_correct":
                se = row.get("all_correct_se")
                cell["all-correct"] = f"{100 * v:.1f}%" + (f" ± {100 * se:.1f}" if se is not None and not pd.isna(se) else "")
            elif c == "latency_total_s":
                cell["latency (ms)"] = f"{1000 * v:.1f}"
            elif isinstance(v, float):
                cell[c] = f"{v:.4g}"
            else:
                cell[c] = str(v)
        out.append(cell)
    return out


def update_card(folder: str | Path, results: str | Path, rows: list[str]) -> Path:
    """Rewrite a student's model card with its results rows (``tmd-bench card``)."""
    folder = Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"{folder}: no model_index.json (not an exported student)")
    index = registry.read_json(index_file)
    _, meta = read_student_config(folder)
    spec = registry.TEACHERS.get(index.get("teacher")) or registry.TEACHERS["shapes"]
    write_model_card(folder, meta, index, spec, index.get("_command"), results=card_results(results, rows),
                     source=str(results), two_experts=spec.boundary_ratio is not None)
    return folder / "README.md"


def load_teacher_components(index: dict, wanted: list[str], dtype=None) -> dict:
    """The referenced teacher components, from ``teacher_path`` when it exists, else the teacher's
    local folder (the shipped Shapes teacher, or the Hugging Face cache); a one-line error says what
    is missing."""
    name = index.get("teacher") or "shapes"
    path = index.get("teacher_path")
    try:
        folder = registry.resolve_teacher_dir(name, path if path and Path(path).is_dir() else None)
    except registry.TeacherNotFound as e:
        raise registry.TeacherNotFound(
            f"this student references its teacher's {', '.join(wanted)}: {e} (or pass them to from_pretrained, "
            "e.g. text_encoder=UMT5EncoderModel.from_pretrained(...))") from None
    out = {}
    for c in wanted:
        if c == "tokenizer":
            from transformers import AutoTokenizer

            out[c] = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
        elif c == "text_encoder":
            from transformers import UMT5EncoderModel

            from tmd_bench.teachers import load_component

            out[c] = load_component(UMT5EncoderModel, folder, "text_encoder", dtype or torch.float32)
        elif c == "vae" and (folder / "vae").is_dir():
            from tmd_bench.teachers import load_wan_vae

            out[c] = load_wan_vae(folder)
    return out


def write_model_card(folder: Path, meta: dict, index: dict, spec, command: str | None,
                     results: list[dict] | None = None, source: str | None = None, two_experts: bool = False) -> None:
    """A Hugging Face model card: YAML front matter and a body with the method, its config, the
    tmd-bench results rows (when known: ``tmd-bench card``) and the command that made the student."""
    method = meta["method"]
    base = spec.repo_id or f"tmd-bench/{spec.name}"
    label = {"tmd": "TMD (transition matching distillation)", "dmd2": "DMD2-v", "kd": "knowledge distillation",
             "rcm": "rCM", "meanflow": "MeanFlow"}.get(method, method)
    tags = ["text-to-video", "video-diffusion", "distillation", "few-step", "tmd-bench", method, spec.name]
    cls = index["_class_name"]
    config = {k: v for k, v in meta.items() if k not in ("train_config",)}
    lines = [
        "---", f"base_model: {base}", "library_name: diffusers", "pipeline_tag: text-to-video",
        "tags:", *[f"- {t}" for t in tags], "---", "",
        f"# {label} student of {spec.name}", "",
        f"A few-step student distilled from `{spec.name}` with tmd-bench ({label}).", "",
        "## Use it", "", "```python", "import torch", f"from tmd_bench import {cls}", "",
        f'pipe = {cls}.from_pretrained("path/to/this/folder")',
        f'video = pipe("{"a red circle moving right" if spec.world == "shapes" else "a cat walking on the grass"}", '
        'generator=torch.Generator().manual_seed(0), output_type="np").frames[0]', "```", "",
    ]
    if two_experts:
        lines += ["The teacher has two experts; this single-network student was initialised from the "
                  "high-noise expert (`transformer`), and its teacher score came from the expert that owns "
                  "each timestep.", ""]
    if index.get("teacher_components"):
        lines += [f"The teacher's {index['teacher_components'].replace(',', ', ')} are not copied here: "
                  f"`from_pretrained` loads them from `{spec.repo_id or spec.name}` in the local Hugging Face "
                  "cache (or the recorded teacher path).", ""]
    lines += ["## Config", "", "```json", json.dumps(config, indent=2), "```", ""]
    if meta.get("train_config"):
        lines += ["## Training config", "", "```json", json.dumps(meta["train_config"], indent=2), "```", ""]
    lines += ["## Results", ""]
    if results:
        cols = list(dict.fromkeys(k for r in results for k in r))
        lines += [f"tmd-bench results rows of this student (from `{source}`):", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                  *["| " + " | ".join(r.get(c, "") for c in cols) + " |" for r in results], ""]
    else:
        lines += ["Not evaluated in this folder: `tmd-bench evaluate --method " + method + " --student <this folder>` "
                  "writes its results row with the run card.", ""]
    if command:
        lines += ["## Made by", "", "```", command, "```", ""]
    (folder / "README.md").write_text("\n".join(lines))
