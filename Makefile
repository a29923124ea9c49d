# One venv, CPU PyTorch pinned (the local CPU wheel; an unpinned torch pulls CUDA).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DATA   ?= .data

.PHONY: install demo test lint proto fetch-data train-vae train-transform train-inpainter train-detectors bench-service bench-identify bench-inpainting clean

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

train-transform: fetch-data
	$(BIN)/origin-id train-transform --origins 2000

## The small CNN inpainter behind the training-only `cnn` fill (13 minutes; its weights are bundled).
train-inpainter: fetch-data
	$(BIN)/python -m training.train_inpainter

## Inpainting denoiser + detector + localizer (about five and a half hours on 2 cores): a photo stage and a
## graphics fine-tune with the three classical fills, then a fine-tune that adds the latent fill
## (diffusion-style) and the localizer trained on that detector, then a fine-tune of both with
## grain-heavy procedural fields in every batch (without them, latent-fill samples teach "a soft
## region among grain is painted"), a localizer fine-tune with those fields in its batches too,
## the verdict's copy-move term refit with a floor under which matches are chance (12 minutes), the
## localizer narrowed (finest level 48 -> 32 channels) and fine-tuned, 45 ms less per query, and last a
## fine-tune of both with photos painted by the small CNN inpainter in every batch (make train-inpainter).
CLASSIC_FILLS := telea,navier_stokes,patch_poisson
train-detectors: fetch-data
	$(BIN)/python -m training.train_detectors --fills $(CLASSIC_FILLS) --train-samples 12000 --denoiser-steps 600 \
		--detector-steps 8000 --localizer-steps 0 --eval-every 400 --out .data/detectors/photo-stage
	$(BIN)/python -m training.train_detectors --fills $(CLASSIC_FILLS) --train-samples 12000 --denoiser-steps 600 \
		--init-detector .data/detectors/photo-stage/detector.safetensors --graphics-samples 1500 \
		--detector-steps 1500 --detector-lr 5e-4 --eval-every 250 --localizer-steps 0 --out .data/detectors/graphics-stage
	$(BIN)/python -m training.train_detectors --train-samples 6000 --seed 21 --denoiser-steps 600 \
		--init-detector .data/detectors/graphics-stage/detector.safetensors --graphics-samples 600 \
		--detector-steps 800 --detector-lr 5e-4 --eval-every 200 --localizer-steps 1500 --out .data/detectors/latent-stage
	$(BIN)/python -m training.train_detectors --train-samples 4000 --seed 41 --denoiser-steps 600 \
		--init-detector .data/detectors/latent-stage/detector.safetensors --graphics-samples 600 --grain-samples 600 \
		--batch 28 --graphics-share 0.2 --grain-share 0.2 --detector-steps 800 --detector-lr 5e-4 --eval-every 200 \
		--localizer-steps 0 --out .data/detectors/grain-stage
	$(BIN)/python -m training.train_detectors --train-samples 4000 --seed 41 --denoiser-steps 600 \
		--init-detector .data/detectors/grain-stage/detector.safetensors --graphics-samples 600 --grain-samples 600 \
		--detector-steps 0 --init-localizer .data/detectors/latent-stage/localizer.safetensors \
		--localizer-steps 800 --localizer-lr 1e-3 --out .data/detectors/grain-final
	$(BIN)/python -m training.train_detectors --train-samples 4000 --seed 41 --denoiser-steps 600 \
		--init-detector .data/detectors/grain-stage/detector.safetensors --graphics-samples 600 --grain-samples 600 \
		--batch 28 --graphics-share 0.2 --grain-share 0.2 --detector-steps 0 --localizer-scenes \
		--init-localizer .data/detectors/grain-final/localizer.safetensors --localizer-steps 800 --localizer-lr 5e-4
	$(BIN)/python -m training.train_detectors --train-samples 4000 --seed 41 --denoiser-steps 600 \
		--init-detector indexer/default_model/inpainting/detector.safetensors --graphics-samples 600 --grain-samples 600 \
		--detector-steps 0 --localizer-steps 0 --copy-move-floor 0.002
	$(BIN)/python -m training.train_detectors --train-samples 4000 --seed 41 --denoiser-steps 600 \
		--init-detector indexer/default_model/inpainting/detector.safetensors --graphics-samples 600 --grain-samples 600 \
		--batch 28 --graphics-share 0.2 --grain-share 0.2 --detector-steps 0 --localizer-scenes \
		--init-localizer indexer/default_model/inpainting/localizer.safetensors --localizer-widths 32,48,96 \
		--localizer-steps 1000 --localizer-lr 1e-3
	$(BIN)/python -m training.train_detectors --train-samples 4000 --seed 41 --denoiser-steps 600 \
		--init-detector indexer/default_model/inpainting/detector.safetensors --graphics-samples 600 --grain-samples 600 \
		--cnn-samples 1200 --batch 34 --graphics-share 0.18 --grain-share 0.18 --cnn-share 0.18 \
		--detector-steps 600 --detector-lr 5e-4 --eval-every 200 --localizer-scenes \
		--init-localizer indexer/default_model/inpainting/localizer.safetensors --localizer-steps 600 --localizer-lr 5e-4

## Service benchmark: ingest rate and query latency at 10k references.
bench-service: install
	$(BIN)/python -m bench.service --references 10000

## Origin identification quality: ID2 (+ query views) against PDQ, per edit family.
bench-identify: fetch-data
	$(BIN)/python -m bench.identify --gallery 5000 --per-family 60 --no-origin 300

## Inpainting detection / localization on the held-out photo split.
bench-inpainting: fetch-data
	$(BIN)/python -m bench.inpainting

clean:
	rm -rf $(VENV) $(DATA)/demo
