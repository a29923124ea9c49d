# One venv, CPU PyTorch pinned (the local CPU wheel; an unpinned torch pulls CUDA).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DATA   ?= .data

.PHONY: install demo test lint proto fetch-data train-vae train-transform bench-service clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,train,bench]"
	touch $@

## The main job: serve + ingest a sample set + query edited copies, on the embedded default.
demo: install
	$(BIN)/origin-id demo --data-dir $(DATA)/demo

## The test suite (real PostgreSQL, real gRPC server, real models).
test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

proto: install
	$(BIN)/python -m server.generate_proto

fetch-data: install
	$(BIN)/python -m training.fetch_data --data-dir $(DATA)/train

## Retrain the bundled default models (long; resumable).
train-vae: fetch-data
	$(BIN)/python -m training.train_vae --minutes 110 --steps 6000

train-transform: install
	$(BIN)/origin-id train-transform

## Service benchmark: ingest rate and query latency at 10k references.
bench-service: install
	$(BIN)/python -m bench.service --references 10000

clean:
	rm -rf $(VENV) $(DATA)/demo
