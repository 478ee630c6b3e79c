# Entry points. `make install` is idempotent: it rebuilds .venv only when the pins change.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install test test-all repro repro-snakemake study smoke smoke-study ui check-fid update-baseline bench

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: install            ## the default test suite (what CI runs)
	$(BIN)/pytest

test-all: install        ## including slow tests
	$(BIN)/pytest -m ""

repro: install           ## the paper's pipeline through DVC (needs a GPU and CelebA)
	PATH=$(BIN):$$PATH $(BIN)/dvc repro

repro-snakemake: install ## the same pipeline through Snakemake
	PATH=$(BIN):$$PATH $(BIN)/snakemake --cores all

study: install           ## the attention study (studies/attention/study.yaml) through DVC (needs a GPU and CelebA)
	PATH=$(BIN):$$PATH $(BIN)/dvc repro studies/attention/dvc.yaml

smoke-study: install     ## the smoke profile, then its 2 x 2 attention study, through DVC and Snakemake
	$(PY) tools/smoke.py --orchestrator both --study attention

smoke: install           ## the smoke profile through DVC and Snakemake, each in a scratch copy
	$(PY) tools/smoke.py --orchestrator both

check-fid: install       ## smoke run through DVC + FID regression check against tests/baselines/smoke.json
	$(PY) tools/smoke.py --orchestrator dvc --check

update-baseline: install ## smoke run through DVC, then write its FID into tests/baselines/smoke.json
	$(PY) tools/smoke.py --orchestrator dvc --update-baseline

ui: install              ## the MLflow UI on 127.0.0.1 against the project's store (a tracking server serves its own); prints the runs table's address
	-@$(PY) -c 'import os; from sagan import tracking; from sagan.params import load_params; \
	uri = os.environ.get("MLFLOW_TRACKING_URI", ""); \
	print("MLflow runs table:", tracking.ui_url(load_params("params.yaml").mlflow, **({"server": uri} if tracking.is_server(uri) else {})))'
	@case "$${MLFLOW_TRACKING_URI:-}" in http://* | https://*) ;; \
	*) $(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host 127.0.0.1 --port 5000 ;; esac

bench: install
	$(PY) benchmarks/prepare.py && $(PY) benchmarks/train.py && $(PY) benchmarks/fid.py && $(PY) benchmarks/orchestration.py
