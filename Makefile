# Two commands for people: `make demo` (the pipeline on the offline sample world, through the Prefect flow
# train_eval_report on an ephemeral local server) and `make test`.
# Both bootstrap .venv on a fresh machine through scripts/install.sh (the only install path).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.terrapipe-installed
export PATH := $(abspath $(BIN)):$(PATH)
export WANDB_MODE ?= disabled
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

demo: $(STAMP)
	dvc pull data.dvc
	$(BIN)/python flows/train_eval_report.py
	dvc status
	@echo "Report: reports/index.html (reports/report.md)"
	@echo "Outputs:" && du -sh data/raw/* data/processed/* data/processed/splits/* 2>/dev/null

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_training_reads.py
	$(BIN)/python benchmarks/bench_scaling.py

clean:
	rm -rf data/raw data/processed
