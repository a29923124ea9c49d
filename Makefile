# One venv, CPU PyTorch pinned (the local CPU wheel; an unpinned torch pulls CUDA).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DATA   ?= .data
RUNS   ?= $(DATA)/runs
BUNDLED := indexer/default_model

.PHONY: install demo test test-slow lint proto fetch-data train-vae train-invariant-encoder train-transform train-inpainter \
	train-detectors promote-vae promote-transform promote-inpainter promote-detectors \
	calibrate-open-set promote-background bench-heldout \
	bench-service bench-identify bench-inpainting clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,train,bench]"
	touch $@

## The main job: serve + ingest a sample set + query edited copies, on the embedded default.
demo: install
	$(BIN)/origin-id demo --data-dir $(DATA)/demo

## The test suite: real PostgreSQL, real gRPC server, real models (what CI runs, via .ci/run).
test: install
	$(BIN)/python -m pytest -q -m "not slow"

## The research folders' tests: training and benchmarks on small data (CI runs them too).
test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .

proto: install
	$(BIN)/python -m origin_id.server.generate_proto

fetch-data: install
	$(BIN)/python -m training.fetch_data --data-dir $(DATA)/train

# -- Training. Every run writes under $(RUNS); only `make promote-*` changes the bundled
# -- models (indexer/default_model, training/weights), after checking what it copies.

train-vae: fetch-data
	$(BIN)/python -m training.train_vae --minutes 110 --steps 6000 --out $(RUNS)/vae

## The encoder fine-tuned with W for edit invariance (decoder frozen); resumable: run it again to go on.
train-invariant-encoder: fetch-data
	$(BIN)/python -m training.train_invariant_encoder --minutes 90

train-transform: fetch-data
	$(BIN)/python -m training.train_transform --out $(RUNS)/transform.safetensors

## The small CNN inpainter behind the training-only `cnn` fill.
train-inpainter: fetch-data
	$(BIN)/python -m training.train_inpainter --out $(RUNS)/cnn_inpainter.safetensors

## The background set and open-set match margin (allowed packages no model trains on).
calibrate-open-set: install
	$(BIN)/python -m training.calibrate_open_set --out $(RUNS)/background.safetensors

promote-vae:
	$(BIN)/python -m training.promote vae $(or $(RUN),$(RUNS)/vae)
promote-transform:
	$(BIN)/python -m training.promote transform $(or $(RUN),$(RUNS)/transform.safetensors)
promote-background:
	$(BIN)/python -m training.promote background $(or $(RUN),$(RUNS)/background.safetensors)
promote-inpainter:
	$(BIN)/python -m training.promote inpainter $(or $(RUN),$(RUNS)/cnn_inpainter.safetensors)
promote-detectors:
	$(BIN)/python -m training.promote detectors $(or $(RUN),$(DET)/cnn-stage)

## The bundled inpainting models: a chain of runs, each from the one before (docs/inpainting-history.md
## says why each is there). Each stage is a file target: an interrupted chain resumes at its first
## unfinished stage. Then: make promote-detectors.
DET   := $(RUNS)/detectors
TRAIN := $(BIN)/python -m training.train_detectors --work-dir $(DATA)/detectors
CLASSIC_FILLS := telea,navier_stokes,patch_poisson
SCENES := --graphics-samples 600 --grain-samples 600

train-detectors: $(DET)/cnn-stage/localizer.safetensors

$(DET)/photo-stage/detector.safetensors: | fetch-data
	$(TRAIN) --fills $(CLASSIC_FILLS) --train-samples 12000 --denoiser-steps 600 \
		--detector-steps 8000 --localizer-steps 0 --eval-every 400 --out $(@D)

$(DET)/graphics-stage/detector.safetensors: $(DET)/photo-stage/detector.safetensors
	$(TRAIN) --fills $(CLASSIC_FILLS) --train-samples 12000 --denoiser-steps 600 --init-detector $< \
		--graphics-samples 1500 --detector-steps 1500 --detector-lr 5e-4 --eval-every 250 --localizer-steps 0 \
		--out $(@D)

$(DET)/latent-stage/localizer.safetensors: $(DET)/graphics-stage/detector.safetensors
	$(TRAIN) --train-samples 6000 --seed 21 --denoiser-steps 600 --init-detector $< --graphics-samples 600 \
		--detector-steps 800 --detector-lr 5e-4 --eval-every 200 --localizer-steps 1500 --out $(@D)

$(DET)/grain-stage/detector.safetensors: $(DET)/latent-stage/localizer.safetensors
	$(TRAIN) --train-samples 4000 --seed 41 --denoiser-steps 600 --init-detector $(<D)/detector.safetensors \
		$(SCENES) --batch 28 --graphics-share 0.2 --grain-share 0.2 --detector-steps 800 --detector-lr 5e-4 \
		--eval-every 200 --localizer-steps 0 --out $(@D)

$(DET)/grain-localizer/localizer.safetensors: $(DET)/grain-stage/detector.safetensors
	$(TRAIN) --train-samples 4000 --seed 41 --denoiser-steps 600 --init-detector $< $(SCENES) \
		--detector-steps 0 --init-localizer $(DET)/latent-stage/localizer.safetensors \
		--localizer-steps 800 --localizer-lr 1e-3 --out $(@D)

$(DET)/scenes-localizer/localizer.safetensors: $(DET)/grain-localizer/localizer.safetensors
	$(TRAIN) --train-samples 4000 --seed 41 --denoiser-steps 600 --init-detector $(DET)/grain-stage/detector.safetensors \
		$(SCENES) --batch 28 --graphics-share 0.2 --grain-share 0.2 --detector-steps 0 --localizer-scenes \
		--init-localizer $< --localizer-steps 800 --localizer-lr 5e-4 --out $(@D)

$(DET)/copy-move-floor/detector.safetensors: $(DET)/scenes-localizer/localizer.safetensors
	$(TRAIN) --train-samples 4000 --seed 41 --denoiser-steps 600 --init-detector $(<D)/detector.safetensors \
		$(SCENES) --detector-steps 0 --localizer-steps 0 --copy-move-floor 0.002 --out $(@D)

$(DET)/narrow-localizer/localizer.safetensors: $(DET)/copy-move-floor/detector.safetensors
	$(TRAIN) --train-samples 4000 --seed 41 --denoiser-steps 600 --init-detector $< $(SCENES) \
		--batch 28 --graphics-share 0.2 --grain-share 0.2 --detector-steps 0 --localizer-scenes \
		--init-localizer $(DET)/scenes-localizer/localizer.safetensors --localizer-widths 32,48,96 \
		--localizer-steps 1000 --localizer-lr 1e-3 --out $(@D)

$(DET)/cnn-stage/localizer.safetensors: $(DET)/narrow-localizer/localizer.safetensors
	$(TRAIN) --train-samples 4000 --seed 41 --denoiser-steps 600 --init-detector $(<D)/detector.safetensors \
		$(SCENES) --cnn-samples 1200 --batch 34 --graphics-share 0.18 --grain-share 0.18 --cnn-share 0.18 \
		--detector-steps 600 --detector-lr 5e-4 --eval-every 200 --localizer-scenes --init-localizer $< \
		--localizer-steps 600 --localizer-lr 5e-4 --out $(@D)

# -- Benchmarks: each writes its results table under bench/results.

## Service: ingest rate and query latency at 10k references.
bench-service: install
	$(BIN)/python -m bench.service --references 10000

## The benchmark of record: held-out packages, other libraries' edits, over gRPC, beside PDQ.
bench-heldout: install
	$(BIN)/python -m bench.heldout_data --out $(DATA)/heldout
	$(BIN)/python -m bench.heldout --data $(DATA)/heldout

## Diagnostic: the project's own edits on tiles of the allowed photos, ID2 against PDQ.
bench-identify: fetch-data
	$(BIN)/python -m bench.identify --gallery 5000 --per-family 60 --no-origin 300

## Inpainting detection / localization on the held-out photo split.
bench-inpainting: fetch-data
	$(BIN)/python -m bench.inpainting

clean:
	rm -rf $(VENV) $(DATA)/demo
