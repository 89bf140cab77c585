# Text-to-image retrieval kit (CVPR 2023 FMC Track 2). `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PROFILE ?= demo
RESUME ?=
RUN ?= runs/latest
ARGS ?=
SEEDS ?= 0 1 2
LABEL ?= study
MUTATION_JOBS ?= 2
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-stamp
# gpu-proof and gpu-wheels need no venv (the lent GPU machine has none): the venv's python when there
# is one, else $(PYTHON).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
# Model hubs are unreachable on many machines: never let a run hang on one (override: HF_HUB_OFFLINE=0).
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED ?= 0
# The notebooks import `lib` from the repository root whatever their working directory.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help setup reproduce quick-review promote seed-study ablation test test-fast lint mutation fingerprint bench gpu-proof gpu-wheels lab clean

help: ## list the targets
	@echo "Usage: make TARGET [PROFILE=demo|competition] (first use creates $(VENV) by itself)"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with pip (again only when requirements.txt changes)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@cp requirements.txt $(STAMP)

reproduce: $(STAMP) ## run the pipeline into runs/<name>/ (PROFILE=demo); RESUME=runs/<name> continues a run
	$(PY) -m lib.pipeline $(if $(RESUME),--resume $(RESUME),--profile $(PROFILE)) $(ARGS)

quick-review: $(STAMP) ## regenerate the submission from best-result-review/ and compare
	$(PY) -m lib.pipeline --review

promote: $(STAMP) ## copy a run into best-result-review/ (RUN=runs/<name>)
	$(PY) -m lib.review promote $(RUN)
	$(PY) -m lib.pipeline --review --record

seed-study: $(STAMP) ## fine-tune RUN's prepared data again under seeds 0 1 2, table with the spread (ARGS: key=value)
	$(PY) -m lib.tools.seed_study --run $(RUN) --seeds $(SEEDS) --label $(LABEL) $(ARGS)

ablation: $(STAMP) ## the README's ablation and choices: every row three seeds of RUN's data, val / A / B with paired intervals (about an hour)
	$(PY) -m lib.tools.ablation --run $(RUN) --seeds $(SEEDS) $(ARGS)

test: $(STAMP) ## run the whole test suite (unit tests, notebooks with papermill, nbval record)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken (tests/ missing?)" >&2; fi; \
	exit $$rc

test-fast: $(STAMP) ## the unit tests without the slow ones (pipelines, notebooks, record, DDP): a minute or two
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken (tests/ missing?)" >&2; fi; \
	exit $$rc

lint: $(STAMP) ## ruff on lib/ and tests/, and the import layering contracts (lint-imports)
	$(VENV)/bin/ruff check lib tests
	$(VENV)/bin/lint-imports

mutation: $(STAMP) ## mutation testing (mutmut) of scoring, labels, padding, top-k, schedule: tens of minutes
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	rm -rf mutants  # a fresh run: mutmut would keep a survivor's old verdict after a test is added
	$(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS)
	$(PY) tests/mutation_report.py

fingerprint: $(STAMP) ## rerun the smoke pipeline and rewrite the golden fingerprint (a change that moves the numbers)
	$(PY) -m lib.tools.fingerprint --write

bench: $(STAMP) ## speed benchmarks against a peer measured in the same run (ARGS=--quick: seconds)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-bench.txt
	$(PY) -m lib.tools.bench $(ARGS)

gpu-proof: ## bigG speed and memory, the CUDA pipeline, torchrun with NCCL, in one run (ARGS=--cpu-dry-run: a minute, no GPU)
	PYTHONUNBUFFERED=1 $(GPU_PY) -m lib.tools.gpu_proof $(ARGS)

gpu-wheels: ## download into .whl/ what gpu-proof needs on a GPU machine without it (Python 3.12, x86-64)
	$(GPU_PY) -m lib.tools.gpu_wheels download

lab: $(STAMP) ## start Jupyter Lab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

clean: ## remove runs and generated demo data (keeps .venv and best-result-review/)
	rm -rf runs data/demo data/smoke .pytest_cache mutants
