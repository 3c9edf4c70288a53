import json
import sys

import pytest

from tmd_bench import suites


def test_vbench_prompts_need_the_vbench_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vbench" else real(name, *a))
    with pytest.raises(suites.SuiteError, match="pip install vbench"):
        suites.load_suite("vbench:overall_consistency")


def test_vbench_prompts_are_read_from_the_installed_package(tmp_path, monkeypatch):
    pkg = tmp_path / "vbench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "VBench_full_info.json").write_text(json.dumps([
        {"prompt_en": "a cat", "dimension": ["overall_consistency", "object_class"]},
        {"prompt_en": "a dog running", "dimension": ["dynamic_degree"]},
        {"prompt_en": "a red car", "dimension": ["color", "overall_consistency"]},
    ]))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("vbench", None)
    suite = suites.load_suite("vbench:overall_consistency")
    assert suite.prompts == ("a cat", "a red car") and suite.name == "vbench:overall_consistency"
    with pytest.raises(suites.SuiteError, match="known: color, dynamic_degree"):
        suites.load_suite("vbench:beauty")
