# d3sr — common commands. `make demo` and `make test` work on a fresh clone (they run `make install` first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo
ARGS ?=

.PHONY: install demo pretrain-tiny test test-full upgrade-check lint format train clean

install: $(STAMP)  ## .venv with d3sr (editable) and its metrics/dev extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[metrics,app,sweeps,dev]"
	touch $(STAMP)

demo: install  ## fine-tune the shipped tiny pretrained backbone with D³SR (CPU, under 4 min on 2 cores), upscale, score held-out photos
	rm -rf $(DEMO_DIR)
	$(BIN)/python -m d3sr.train experiment=demo hydra.run.dir=$(DEMO_DIR)/train
	$(BIN)/python -m d3sr.infer bundle=$(DEMO_DIR)/train/checkpoints/last.ckpt input=embedded output=$(DEMO_DIR)/sr inference.color_fix=backproject
	$(BIN)/python -m d3sr.held_out $(DEMO_DIR)/train/checkpoints/last.ckpt --tile-size 0 --lq clean --color-fix backproject --json $(DEMO_DIR)/held_out.json
	@echo
	@echo "Demo done. TensorBoard logs: $(DEMO_DIR)/train/tensorboard  (tensorboard --logdir $(DEMO_DIR)/train)"
	@echo "            checkpoint:      $(DEMO_DIR)/train/checkpoints/last.ckpt"
	@echo "            upscaled photos: $(DEMO_DIR)/sr   held-out scores: $(DEMO_DIR)/held_out.json"

pretrain-tiny: install  ## re-make the shipped tiny backbone (deterministic; ~15 min on 2 CPU cores)
	$(BIN)/python -m d3sr.pretrain_tiny output=src/d3sr/assets/tiny_backbone overwrite=true

TEST_WORKERS ?= 2
test: install  ## the fast CPU test suite (what CI runs), on $(TEST_WORKERS) pytest-xdist workers (one thread each)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15

test-full: install  ## every test, slow ones included
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "slow or not slow"

UPGRADE_VENV ?= .venv-upgrade
upgrade-check:  ## the newest versions pyproject.toml allows, in a scratch venv, then the fast suite (docs/dependencies.md)
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[metrics,app,sweeps,dev]"
	$(UPGRADE_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(torch|lightning|diffusers|hydra-core|omegaconf|peft|transformers|torchmetrics|kornia|pyiqa)=='
	$(UPGRADE_VENV)/bin/python -m pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

train: install  ## python -m d3sr.train $(ARGS), e.g. make train ARGS="experiment=sdxl_disc"
	$(BIN)/python -m d3sr.train $(ARGS)

clean:
	rm -rf outputs logs multirun .pytest_cache .ruff_cache
