# an2dl-kit: every target that needs Python depends on the virtual environment stamp,
# so a fresh clone needs nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
AN2DL  := $(BIN)/an2dl
STAMP  := $(VENV)/.installed

PROFILE ?= kaggle
TASK    ?= cells
DATA    ?=
OUT     ?=
FILE    ?=
MSG     ?=
# Kaggle configuration (README "Kaggle workflow"); KAGGLE_USERNAME defaults to kaggle.json's username.
ACCELERATOR       ?= NvidiaTeslaT4
MARS_COMPETITION  ?= an-2-dl-2024-2025-homework-2
CELLS_COMPETITION ?=
CELLS_DATASETS    ?=
MARS_DATASETS     ?=
INTERNET          ?= true
# Kernel image: original (the image of the kernel's first run), latest, or a digest (README "Hardware").
PIN               ?= original
export ACCELERATOR MARS_COMPETITION CELLS_COMPETITION CELLS_DATASETS MARS_DATASETS INTERNET PIN

.PHONY: help demo test lint bench gpu-check synth bundle push-cells push-mars status wait \
        output-cells output-mars submit run-cells-local run-mars-local clean

help:
	@echo "make demo            synthetic data -> train both tasks -> leaderboard files (DATA=DIR for real files)"
	@echo "make test            the test suite"
	@echo "make lint            ruff"
	@echo "make bench           speed and size benchmarks (one table)"
	@echo "make bundle          build/kernels/<task>/kernel.py + kernel-metadata.json (PROFILE=$(PROFILE))"
	@echo "make push-cells | push-mars     bundle and push the kernel to Kaggle"
	@echo "make status | wait TASK=cells   kernel status / poll until it finishes"
	@echo "make output-cells | output-mars download the kernel outputs into submissions/<task>/v<N>/"
	@echo "make submit TASK=mars [FILE=..] [MSG=..]  validate and submit"
	@echo "make run-cells-local | run-mars-local     run the bundled kernel here (DATA=DIR OUT=DIR PROFILE=..)"
	@echo "  Kaggle settings: KAGGLE_USERNAME ACCELERATOR=$(ACCELERATOR) MARS_COMPETITION=$(MARS_COMPETITION)"
	@echo "                   CELLS_COMPETITION CELLS_DATASETS MARS_DATASETS INTERNET=$(INTERNET) PIN=$(PIN)"
	@echo "make gpu-check       train each kaggle profile a few steps on synthetic data: step time, img/s, memory"

$(STAMP): pyproject.toml constraints/kaggle-gpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/kaggle-gpu.txt -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(AN2DL) demo $(if $(DATA),--data $(DATA))

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check an2dl_kit tests bench kernels

bench: $(STAMP)
	$(BIN)/python -m bench

gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

synth: $(STAMP)
	$(AN2DL) synth --out $(or $(OUT),data/demo)

bundle: $(STAMP)
	$(AN2DL) bundle --task cells --profile $(PROFILE)
	$(AN2DL) bundle --task mars --profile $(PROFILE)

push-cells: $(STAMP)
	$(AN2DL) push --task cells --profile $(PROFILE)

push-mars: $(STAMP)
	$(AN2DL) push --task mars --profile $(PROFILE)

status: $(STAMP)
	$(AN2DL) status --task $(TASK)

wait: $(STAMP)
	$(AN2DL) wait --task $(TASK)

output-cells: $(STAMP)
	$(AN2DL) output --task cells

output-mars: $(STAMP)
	$(AN2DL) output --task mars

submit: $(STAMP)
	$(AN2DL) submit --task $(TASK) $(if $(FILE),--file $(FILE)) $(if $(MSG),--message "$(MSG)")

run-cells-local: $(STAMP)
	$(AN2DL) run-local --task cells --profile $(or $(filter-out kaggle,$(PROFILE)),local) \
		$(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

run-mars-local: $(STAMP)
	$(AN2DL) run-local --task mars --profile $(or $(filter-out kaggle,$(PROFILE)),local) \
		$(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

clean:
	rm -rf build data/demo .pytest_cache .ruff_cache
