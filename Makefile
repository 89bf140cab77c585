# Text-to-image retrieval kit (CVPR 2023 FMC Track 2). `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PROFILE ?= demo
PROFILES := $(sort $(basename $(notdir $(wildcard configs/*.yaml))))
RESUME ?=
RUN ?= runs/$(PROFILE)/latest
ARGS ?=
LAB_ARGS ?=
SEEDS ?= 0 1 2
LABEL ?= study
MUTATION_JOBS ?= 2
# pytest-xdist workers for make test and test-fast: one per core (0 runs the tests in pytest's process)
TEST_JOBS ?= 2
PYTHON ?= python3
KERNEL := fmc-track2-kit
# The environment the targets use: .venv (made by the first target that needs it), or the conda
# environment of environment.yml when it is active, or any other with VENV=<its prefix>.
VENV ?= $(if $(filter $(KERNEL),$(CONDA_DEFAULT_ENV)),$(CONDA_PREFIX),.venv)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
STAMP := $(VENV)/.fmc-track2-kit-stamp
# gpu-proof and gpu-wheels need no venv (a GPU machine may have none): the venv's python when there
# is one, else $(PYTHON).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
# Model hubs are unreachable on many machines: never let a run hang on one (override: HF_HUB_OFFLINE=0).
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED ?= 0

.PHONY: help setup reproduce quick-review promote foundation seed-study ablation confirm test test-fast lint mutation fingerprint bench gpu-proof bigg-cpu rehearsal gpu-wheels lab clean clean-runs

help: ## list the targets
	@echo "Usage: make TARGET [PROFILE=$(subst $() ,|,$(PROFILES))|FILE.yaml] [ARGS=\"key=value ...\"]"
	@echo "(the first target that needs it creates $(VENV) by itself)"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: $(STAMP) ## create the environment: .venv with the pinned packages, the kit installed in it (editable), a Jupyter kernel

# The pins install with uv (pinned in requirements.txt, installed by pip first), told pip's own indexes,
# wheel folders and constraints (tools/uv_args.py): about 5 times faster than pip (docs/benchmarks.md).
# pip installs them where uv cannot be had or fails, or with INSTALLER=pip. Both compile the packages'
# bytecode at install, as pip does by default: otherwise the first test run of a fresh clone compiles
# it in its workers and kernels (pytest 5 min 39 s on a fresh clone without, 3 min 47 s with).
INSTALLER ?= uv
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$(INSTALLER)" = uv ] && $(PIP) "$$(grep -m1 -o '^uv==[^ #]*' requirements.txt)" 2>/dev/null \
	  && $(VENV)/bin/uv pip install --python $(PY) -q --compile-bytecode -r requirements.txt \
	     $$($(PYTHON) tools/uv_args.py); then \
	  echo "installed requirements.txt with uv"; \
	else echo "installing requirements.txt with pip"; $(PIP) -r requirements.txt; fi
	$(PIP) --no-deps --no-build-isolation -e . || $(PIP) --no-deps -e .
	@$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python ($(KERNEL))" >/dev/null 2>&1 \
	  && echo "Jupyter kernel \"Python ($(KERNEL))\" registered: pick it in a Jupyter started from elsewhere" \
	  || echo "note: the Jupyter kernel $(KERNEL) could not be registered; make lab works without it"
	@cp requirements.txt $(STAMP)

reproduce: $(STAMP) ## run the pipeline into runs/<profile>/<name>/; RESUME=runs/<profile>/<name> continues a run
	$(PY) -m lib.pipeline $(if $(RESUME),--resume $(RESUME),--profile $(PROFILE)) $(ARGS)

quick-review: $(STAMP) ## regenerate the submission from best-result-review/ and compare
	$(PY) -m lib.pipeline --review

promote: $(STAMP) ## make a finished run the record in best-result-review/ (RUN=runs/<profile>/<name>)
	$(PY) -m lib.pipeline --promote $(RUN)

foundation: $(STAMP) ## pretrain the demo's shipped foundation model again from its recipe and compare the bytes
	$(PY) -m tools.foundation --profile $(PROFILE) $(ARGS)

seed-study: $(STAMP) ## fine-tune RUN's prepared data again under seeds 0 1 2, table with the spread (ARGS: key=value)
	$(PY) -m tools.study.seed_study --run $(RUN) --seeds $(SEEDS) --label $(LABEL) $(ARGS)

ablation: $(STAMP) ## the ablation of docs/results.md: every row three seeds of RUN's data, val / A / B with paired intervals (about 1 h 25 min on 2 cores, ARGS=--jobs 2)
	$(PY) -m tools.study.ablation --run $(RUN) --seeds $(SEEDS) $(ARGS)

confirm: $(STAMP) ## every demo default again on a world no choice has seen (demo_seed 1): docs/tables/world1-confirm.md (1 h 23 min on 2 cores)
	$(PY) -m tools.study.confirm --seeds $(SEEDS) $(ARGS)

test: $(STAMP) ## run the whole test suite (unit tests, notebooks with papermill, nbval record)
	@$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken (tests/ missing?)" >&2; fi; \
	exit $$rc

test-fast: $(STAMP) ## the unit tests without the slow ones (pipelines, notebooks, record, DDP): about 45 s
	@$(PY) -m pytest -m "not slow" -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken (tests/ missing?)" >&2; fi; \
	exit $$rc

lint: $(STAMP) ## ruff on lib/, tools/ and tests/, and the import layering contracts (lint-imports)
	$(VENV)/bin/ruff check lib tools tests
	$(VENV)/bin/lint-imports

mutation: $(STAMP) ## mutation testing (mutmut) of the 18 modules a wrong number can come from: about 2 h on 2 cores
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	rm -rf mutants  # a fresh run: mutmut would keep a survivor's old verdict after a test is added
	$(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS)
	$(PY) tests/mutation_report.py

fingerprint: $(STAMP) ## rerun the smoke pipeline and rewrite the golden fingerprint (a change that moves the numbers)
	$(PY) -m tools.fingerprint --write

bench: $(STAMP) ## speed benchmarks against a peer measured in the same run (ARGS=--quick: seconds)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-bench.txt
	$(PY) -m tools.bench $(ARGS)

gpu-proof: ## bigG speed and memory, the CUDA pipeline, torchrun with NCCL, in one run (ARGS=--cpu-dry-run: a minute, no GPU)
	PYTHONUNBUFFERED=1 $(GPU_PY) -m tools.gpu $(ARGS)

rehearsal: $(STAMP) ## the competition profile's code path at the real sizes (126,117 / 10,000 / 17,611, synthetic) with the tiny model, on a CPU
	$(PY) -m tools.rehearsal $(ARGS)

bigg-cpu: $(STAMP) ## ViT-bigG-14 on the CPU, random weights: parameters, memory, preprocessing, text trim, a few encodes (~10 min, 12 GB)
	$(PY) -m tools.gpu.bigg_cpu $(ARGS)

gpu-wheels: ## download into .whl/ what gpu-proof needs on a GPU machine without it (Python 3.12, x86-64)
	$(GPU_PY) -m tools.gpu.wheels download

lab: $(STAMP) ## Jupyter Lab at the repository root, opened on notebooks/ (LAB_ARGS="--port 8889 --no-browser")
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --ServerApp.default_url=/lab/tree/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean: ## remove what can be rebuilt (generated demo data, caches, quick-review output); never a run
	rm -rf data/demo data/smoke .cache .pytest_cache mutants runs/quick-review runs/quick-review-notebook \
	  runs/quick-review-logs

clean-runs: ## delete every run under runs/ (asks first; CONFIRM=yes answers for you)
	@n=$$(find runs -name params.yaml 2>/dev/null | wc -l); \
	if [ "$$n" = 0 ]; then echo "no run under runs/"; exit 0; fi; \
	if [ "$(CONFIRM)" != yes ]; then \
	  read -r -p "delete runs/ and its $$n run(s), checkpoints included? type yes: " answer || answer=; \
	  if [ "$$answer" != yes ]; then echo "kept runs/"; exit 1; fi; \
	fi; \
	rm -rf runs && echo "deleted runs/ ($$n run(s))"
