# GreedySign. `make demo` serves the shipped model; `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

HOST   ?= 127.0.0.1
PORT   ?= 8000
# make train DATA="/path/to/TSRD /path/to/tt100k-crops" [EPOCHS=30]
#   [METHOD=greedy-dib|greedy-ce|sgd] [ARGS="..."]: each folder of DATA is one --data
#   [NPROC=N]: N training processes (torchrun + DDP), one per GPU, or N CPU processes;
#   on several machines, the same on each with RDZV="--nnodes M --rdzv-backend c10d
#   --rdzv-endpoint HOST:29400 --rdzv-id JOB" (README: Training on several GPUs).
DATA   ?=
EPOCHS ?= 30
METHOD ?= greedy-dib
NPROC  ?=
RDZV   ?= --standalone
DEMO_IMAGE ?= ../shared/data/ctsrd-real/images/000_0001.png
# `make serve` serves MODEL, else the newest run, else the shipped model; `make demo` always
# the shipped one unless MODEL is given, so that it shows the same thing on every machine.
SHIPPED_MODEL := model/shipped/greedysign-ctsrd-resnet18.pt

.PHONY: install browser test lint train serve demo bench report clean

install: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The browser tests drive Debian's Chromium: install it when missing and possible (root with
# apt-get); otherwise they skip and say why.
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "WARNING: no Chromium at /usr/bin/chromium: the browser tests will be skipped"

# Where Chromium exists the browser tests must run, and where the shared data exists every
# real-data test must: GREEDYSIGN_REQUIRE_BROWSER and GREEDYSIGN_REQUIRE_DATA turn a skip
# into a failure.
SHARED_DATA := $(or $(GREEDYSIGN_SHARED_DATA),../shared/data)
test: $(STAMP) browser
	GREEDYSIGN_REQUIRE_BROWSER=$$(test -x /usr/bin/chromium && echo 1) \
	GREEDYSIGN_REQUIRE_DATA=$$(test -d $(SHARED_DATA) && echo 1) $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

# Without DATA it trains on a synthetic CTSRD set (generated once into .cache/).
train: $(STAMP)
	$(if $(NPROC),$(BIN)/torchrun $(RDZV) --nproc-per-node $(NPROC) -m app,$(BIN)/greedysign) \
	  train --method $(METHOD) --epochs $(EPOCHS) $(foreach d,$(DATA),--data $(d)) $(ARGS)

serve: $(STAMP)
	$(BIN)/greedysign serve --host $(HOST) --port $(PORT) $(if $(MODEL),--model $(MODEL))

demo: $(STAMP)
	@echo "GreedySign: open http://$(HOST):$(PORT)/  (API docs: http://$(HOST):$(PORT)/docs)"
	@echo "try:  curl -F file=@$(DEMO_IMAGE) 'http://$(HOST):$(PORT)/v1/predict?mask_format=none'"
	$(BIN)/greedysign serve --host $(HOST) --port $(PORT) --model $(or $(MODEL),$(SHIPPED_MODEL))

bench: $(STAMP)
	$(BIN)/python bench/train_memory.py --splits balanced lean blocks
	$(BIN)/python bench/service_load.py --seconds 10
	$(BIN)/python bench/gpu_check.py

# The information analysis of one SGD and one Greedy-DIB run on all the real data (the SGD
# reference's recipe, and Greedy-DIB's simultaneous schedule: the runs ANALYSIS.md describes),
# with encoder snapshots every REPORT_EVERY epochs: figures and
# JSON in docs/analysis/ (ANALYSIS.md says what they show). About 70 minutes on 2 CPU cores.
REPORT_DATA   ?= ../shared/data/ctsrd-real ../shared/data/tt100k-crops
REPORT_EPOCHS ?= 12
REPORT_EVERY  ?= 3
REPORT_TRAIN  = $(BIN)/greedysign train $(foreach d,$(REPORT_DATA),--data $(d)) --image-size 64 \
  --epochs $(REPORT_EPOCHS) --head-epochs 4 --snapshot-every $(REPORT_EVERY)
report: $(STAMP)
	mkdir -p docs/analysis
	test -f runs/report/sgd/model.pt || $(REPORT_TRAIN) --method sgd --out runs/report/sgd
	test -f runs/report/greedy-dib/model.pt || $(REPORT_TRAIN) --method greedy-dib \
	  --schedule simultaneous --out runs/report/greedy-dib
	for method in sgd greedy-dib; do \
	  $(BIN)/greedysign analyze runs/report/$$method --out docs/analysis/$$method --json \
	    > docs/analysis/$$method.json || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
