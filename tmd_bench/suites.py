"""Prompt suites: fixed lists of prompts, each clip seeded by its line (``seed = base + index``).

A suite is named (a file ``<name>.txt`` in the package's ``prompts/``) or a path. Formats:
``.txt`` — one prompt per line, ``#`` comments and blank lines ignored; ``.jsonl`` — one JSON
object per line with a ``"prompt"`` string (other keys are kept as metadata).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tmd_bench.registry import clip_text


class SuiteError(ValueError):
    """A prompt suite that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Suite:
    name: str
    prompts: tuple[str, ...]
    source: str
    sha256: str

    def seeds(self, base: int = 0) -> list[int]:
        return [base + i for i in range(len(self.prompts))]

    def head(self, limit: int | None) -> "Suite":
        if limit is None or limit >= len(self.prompts):
            return self
        return Suite(f"{self.name}[:{limit}]", self.prompts[:limit], self.source, self.sha256)


def builtin_suites() -> list[str]:
    folder = resources.files("tmd_bench.prompts")
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith((".txt", ".jsonl")))


def _builtin_path(name: str) -> Path | None:
    folder = resources.files("tmd_bench.prompts")
    for ext in (".txt", ".jsonl"):
        p = folder / (name + ext)
        if p.is_file():
            return Path(str(p))
    return None


def load_vbench_suite(dimension: str) -> Suite:
    """VBench's prompts for one dimension (``--prompts vbench:overall_consistency``), read from the
    ``VBench_full_info.json`` of the installed ``vbench`` package (entries ``{"prompt_en",
    "dimension": [...]}``)."""
    import importlib.util

    spec = importlib.util.find_spec("vbench")
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError("VBench prompt lists come from the vbench package, which is not installed: "
                         "pip install vbench (or pass a prompt file)")
    info = Path(list(spec.submodule_search_locations)[0]) / "VBench_full_info.json"
    if not info.is_file():
        raise SuiteError(f"{info} is missing; download VBench_full_info.json from the VBench repository into it")
    raw = info.read_bytes()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SuiteError(f"{info}: not valid JSON ({e.msg})") from None
    known = sorted({d for e in entries for d in e.get("dimension", [])})
    prompts = [e["prompt_en"] for e in entries if dimension in e.get("dimension", [])]
    if not prompts:
        raise SuiteError(f"no VBench prompts for dimension {dimension!r}; known: {', '.join(known)}")
    return Suite(f"vbench:{dimension}", tuple(prompts), str(info), hashlib.sha256(raw).hexdigest()[:16])


def load_suite(name_or_path: str) -> Suite:
    """Load a built-in suite by name, ``vbench:<dimension>``, or a suite file by path;
    malformed input is a SuiteError."""
    if name_or_path.startswith("vbench:"):
        return load_vbench_suite(name_or_path.split(":", 1)[1])
    path = _builtin_path(name_or_path)
    if path is None:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise SuiteError(
                f"prompt suite {clip_text(name_or_path)!r} is neither a built-in suite "
                f"({', '.join(builtin_suites())}) nor a readable file"
            )
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark (Windows editors write one) is not a prompt
    except UnicodeDecodeError as e:
        raise SuiteError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SuiteError(f"{path}: cannot read the prompt file ({e.strerror or e})") from None
    prompts: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if path.suffix == ".jsonl":
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SuiteError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
                raise SuiteError(f'{path}:{lineno}: each line must be an object with a non-empty "prompt" string')
            prompts.append(obj["prompt"].strip())
        else:
            line = line.strip()
            if line and not line.startswith("#"):
                prompts.append(line)
    if not prompts:
        raise SuiteError(f"{path}: the suite has no prompts")
    name = path.name.rsplit(".", 1)[0]
    return Suite(name, tuple(prompts), str(path), hashlib.sha256(raw).hexdigest()[:16])


def check_world_prompts(suite: Suite) -> None:
    """A Shapes-world teacher can only be scored on prompts of its grammar: say which line is not."""
    from tmd_bench.world import Scene

    for i, p in enumerate(suite.prompts):
        try:
            Scene.parse(p)
        except ValueError as e:
            raise SuiteError(f"suite {suite.name!r}, prompt {i + 1}: {e}") from None
