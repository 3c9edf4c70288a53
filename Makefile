# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tmd-bench-installed
# The project itself only asks for torch>=2.6 (bring your CUDA build; 2.5.1 and older have a published
# torch.load weights_only bypass); the set-up pins the
# CPU-capable build that this machine kind installs from local disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# Python caches the bytecode of every module it imports (__pycache__, git-ignored) unless
# PYTHONDONTWRITEBYTECODE is set, as it is on this project's machines: then every process compiled torch,
# diffusers and transformers again, ~10 s of the ~17 s an import of the Wan classes took (6.6 s cached).
# The suite starts dozens of processes (torchrun workers, CLI subprocesses), so the recipes let Python cache.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test install browser clean mutate

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# --no-compile: pip would byte-compile every file of torch, transformers and diffusers on install (a minute
	# of the set-up on two cores); Python compiles the modules a run imports, once, when it imports them
	$(PY) -m pip install --quiet --no-compile $(TORCH_SPEC)
	$(PY) -m pip install --quiet --no-compile -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tmd-bench demo

# The HTML report is checked in a real headless browser: Debian's chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# One pytest-xdist worker per core, at most 4 (each worker holds torch and a few tiny models: ~1.7 GB at
# its peak); a test file stays on one worker, so its module fixtures (one torchrun launch, one tiny
# checkpoint) are built once. tests/conftest.py gives each worker its share of the cores as threads.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile

# Mutation testing (mutmut, from PyPI) of the modules where a silent bug corrupts results; not in CI
# (hours for every module on 2 cores). One module: make mutate MUTATE_ARGS="--module reports/pareto.py"
mutate: $(STAMP)
	$(PY) -m pip install --quiet 'mutmut>=3.8,<4'
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) benchmarks/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
