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
RUNS    ?=
WEIGHTS ?= uniform
# The experiment loop (README "Trying variants"): SET="loss=focal epochs=80" overrides, NAME=focal a variant's
# own kernel and folders, FORCE=1 pushes past the GPU-quota check.
SET     ?=
NAME    ?=
FORCE   ?=
# K-fold kernels side by side (docs/kaggle.md "Folds"): K=5 folds, pushed as the variants fold<k> or NAME-fold<k>.
K       ?= 5
KIT_FOLDS = --task $(TASK) --folds $(K) $(KIT_NAME)
KIT_SET   = $(foreach s,$(SET),--set $(s))
KIT_NAME  = $(if $(NAME),--name $(NAME))
KIT_FORCE = $(if $(filter-out 0 false no,$(FORCE)),--force)
# `make upload-data`: PUBLIC=1 creates the dataset public (default: private).
PUBLIC  ?=
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

.PHONY: help demo test lint bench gpu-check results docs synth bundle push-cells push-mars status wait \
        output-cells output-mars submit scores runs quota upload-data run-cells-local run-mars-local ensemble clean \
        cpu-image-check push-folds wait-folds output-folds ensemble-folds report report-check

help:
	@echo "make demo            synthetic data -> train both tasks -> leaderboard files (DATA=DIR for real files)"
	@echo "make test            the test suite [TEST_WORKERS=2]"
	@echo "make lint            ruff"
	@echo "make bench           speed and size benchmarks (one table)"
	@echo "make results         the measured tables of README.md and docs/ from docs/results/records/"
	@echo "make docs            make results, and docs/configuration.md from the configuration (an2dl config --markdown)"
	@echo "make bundle          build/kernels/<task>/kernel.py + kernel-metadata.json (PROFILE=$(PROFILE))"
	@echo "make push-cells | push-mars     bundle and push the kernel to Kaggle [SET=\"f=v ...\"] [NAME=..] [FORCE=1]"
	@echo "make status | wait TASK=cells   kernel status / poll until it finishes [NAME=..]"
	@echo "make output-cells | output-mars download the kernel outputs into submissions/<task>/[<name>/]v<N>/"
	@echo "make submit TASK=mars [NAME=..] [FILE=..] [MSG=..]  validate and submit"
	@echo "make scores TASK=mars           fill the ledger's public/private scores from Kaggle"
	@echo "make runs TASK=mars             table of every pushed version (submissions/<task>/runs.md, .csv)"
	@echo "make quota                      Kaggle GPU hours used and left this week"
	@echo "make upload-data TASK=cells [DATA=DIR] [PUBLIC=1]  the task's files -> private dataset <user>/an2dl-<task>-data"
	@echo "make push-folds TASK=mars K=5 [SET=..] [NAME=..] [FORCE=1]  one kernel per fold, side by side"
	@echo "make wait-folds | output-folds | ensemble-folds TASK=mars K=5 [NAME=..]  follow them, then one submission"
	@echo "make run-cells-local | run-mars-local     run the bundled kernel here (DATA=DIR OUT=DIR PROFILE=..)"
	@echo "make ensemble TASK=mars RUNS=\"DIR DIR ..\" [OUT=..] [WEIGHTS=validation] [DATA=..]  average runs"
	@echo "make report TASK=mars RUNS=\"DIR DIR ..\" [OUT=..]  homework report: report.html/.md, figures/, tables.tex"
	@echo "make report-check    install Debian's chromium (apt-get) and check a report in it, headless and offline"
	@echo "  Kaggle settings: KAGGLE_USERNAME ACCELERATOR=$(ACCELERATOR) MARS_COMPETITION=$(MARS_COMPETITION)"
	@echo "                   CELLS_COMPETITION CELLS_DATASETS MARS_DATASETS INTERNET=$(INTERNET) PIN=$(PIN)"
	@echo "make gpu-check       train each kaggle profile a few steps on synthetic data: step time, img/s, memory"
	@echo "make cpu-image-check both smoke kernels, bundled, in a venv of tensorflow-cpu and the image's libraries"
	@echo "make medmnistc       MedMNIST-C's corruptions for bench.cells_robustness and augment=medmnistc [SUDO=sudo]"

$(STAMP): pyproject.toml constraints/kaggle-gpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/kaggle-gpu.txt -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(AN2DL) demo $(if $(DATA),--data $(DATA))

# Test processes: most of the suite's time is single-threaded Python (graph tracing, subprocess start-up), so
# two workers on two cores finish in about 0.6x the time of one; whole files go to one worker (module fixtures).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check an2dl_kit tests bench kernels

bench: $(STAMP)
	$(BIN)/python -m bench

# MedMNIST-C (the published corrupted copy of bench.cells_robustness, augment=medmnistc): ImageMagick's MagickWand
# library from the system's packages (its run-time library, else the -dev package medmnistc's README names), then
# medmnistc and its wand binding without their declared dependencies, and scikit-image at medmnistc's pin: the
# BloodMNIST corruptions need nothing else. torch and torchvision would bring gigabytes of CUDA libraries for two
# corruptions BloodMNIST does not use, and opencv-python would overwrite the kit's headless OpenCV.
SUDO ?=
.PHONY: medmnistc
medmnistc: $(STAMP)
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq --no-install-recommends libmagickwand-6.q16-6 \
		|| $(SUDO) apt-get install -y -qq --no-install-recommends libmagickwand-dev
	$(BIN)/python -m pip install --quiet -c constraints/kaggle-gpu.txt --no-deps medmnistc wand
	$(BIN)/python -m pip install --quiet -c constraints/kaggle-gpu.txt scikit-image==0.23.2
	$(BIN)/python -c "from an2dl_kit.augment.medmnist_c import blood_corruptions; \
		print('medmnistc:', len(blood_corruptions()), 'BloodMNIST corruptions ready')"

gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

results: $(STAMP)
	$(BIN)/python -m bench.results

docs: results
	$(AN2DL) config --markdown > docs/configuration.md.part && mv docs/configuration.md.part docs/configuration.md

synth: $(STAMP)
	$(AN2DL) synth --out $(or $(OUT),data/demo)

bundle: $(STAMP)
	$(AN2DL) bundle --task cells --profile $(PROFILE) $(KIT_NAME) $(KIT_SET)
	$(AN2DL) bundle --task mars --profile $(PROFILE) $(KIT_NAME) $(KIT_SET)

push-cells: $(STAMP)
	$(AN2DL) push --task cells --profile $(PROFILE) $(KIT_NAME) $(KIT_SET) $(KIT_FORCE)

push-mars: $(STAMP)
	$(AN2DL) push --task mars --profile $(PROFILE) $(KIT_NAME) $(KIT_SET) $(KIT_FORCE)

status: $(STAMP)
	$(AN2DL) status --task $(TASK) $(KIT_NAME)

wait: $(STAMP)
	$(AN2DL) wait --task $(TASK) $(KIT_NAME)

output-cells: $(STAMP)
	$(AN2DL) output --task cells $(KIT_NAME)

output-mars: $(STAMP)
	$(AN2DL) output --task mars $(KIT_NAME)

submit: $(STAMP)
	$(AN2DL) submit --task $(TASK) $(KIT_NAME) $(if $(FILE),--file $(FILE)) $(if $(MSG),--message "$(MSG)")

scores: $(STAMP)
	$(AN2DL) scores --task $(TASK)

runs: $(STAMP)
	$(AN2DL) runs --task $(TASK)

quota: $(STAMP)
	$(AN2DL) quota

upload-data: $(STAMP)
	$(AN2DL) upload-data --task $(TASK) $(if $(DATA),--data $(DATA)) $(if $(filter-out 0 false no,$(PUBLIC)),--public)

push-folds: $(STAMP)
	$(AN2DL) push-folds $(KIT_FOLDS) --profile $(PROFILE) $(KIT_SET) $(KIT_FORCE)

wait-folds: $(STAMP)
	$(AN2DL) wait-folds $(KIT_FOLDS)

output-folds: $(STAMP)
	$(AN2DL) output-folds $(KIT_FOLDS)

ensemble-folds: $(STAMP)
	$(AN2DL) ensemble-folds $(KIT_FOLDS) --weights $(WEIGHTS) $(if $(DATA),--data $(DATA))

run-cells-local: $(STAMP)
	$(AN2DL) run-local --task cells --profile $(or $(filter-out kaggle,$(PROFILE)),local) \
		$(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT)) $(KIT_SET)

run-mars-local: $(STAMP)
	$(AN2DL) run-local --task mars --profile $(or $(filter-out kaggle,$(PROFILE)),local) \
		$(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT)) $(KIT_SET)

ensemble: $(STAMP)
	$(AN2DL) ensemble --task $(TASK) $(RUNS) --out $(or $(OUT),build/ensemble/$(TASK)) --weights $(WEIGHTS) \
		$(if $(DATA),--data $(DATA))

# The bundled smoke kernels of both tasks, run with `python -I` in a venv that holds TensorFlow from the
# `tensorflow-cpu` distribution (CPU-only machines, Kaggle's TPU image), the image's other libraries and nothing
# of the kit, not even its `kaggle` dependency; each must write a valid submission.csv. The venv is built once.
CPU_IMAGE := build/cpu-image
CPU_PY    := $(CPU_IMAGE)/venv/bin/python

$(CPU_IMAGE)/venv/.installed: constraints/tensorflow-cpu.txt
	rm -rf $(CPU_IMAGE)/venv
	$(PYTHON) -m venv $(CPU_IMAGE)/venv
	$(CPU_PY) -m pip install --quiet -r constraints/tensorflow-cpu.txt
	@touch $@

cpu-image-check: $(STAMP) $(CPU_IMAGE)/venv/.installed
	$(CPU_PY) -I -c "import importlib.util as u, sys; found = [m for m in ('an2dl_kit', 'kaggle') if u.find_spec(m)]; \
		sys.exit(f'$(CPU_IMAGE)/venv: holds {found}, must not' if found else 0)"
	$(AN2DL) synth --size tiny --out $(CPU_IMAGE)/data
	$(AN2DL) run-local --task cells --profile smoke --data $(CPU_IMAGE)/data --out $(CPU_IMAGE)/cells --python $(CPU_PY)
	$(AN2DL) check $(CPU_IMAGE)/cells/submission.csv --task cells --test $(CPU_IMAGE)/data/cells/test_set.npz
	$(AN2DL) run-local --task mars --profile smoke --data $(CPU_IMAGE)/data --out $(CPU_IMAGE)/mars --python $(CPU_PY)
	$(AN2DL) check $(CPU_IMAGE)/mars/submission.csv --task mars --test $(CPU_IMAGE)/data/mars/mars_for_students.npz

report: $(STAMP)
	$(AN2DL) report --task $(TASK) $(RUNS) --out $(or $(OUT),build/report/$(TASK))

# The browser check of tests/test_report.py: Debian's chromium (root, or sudo), then that test alone; with
# AN2DL_REQUIRE_BROWSER set a missing browser fails the test instead of skipping it. Screenshots: build/report-check/.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
report-check: $(STAMP)
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	AN2DL_REQUIRE_BROWSER=1 AN2DL_SCREENSHOT_DIR=build/report-check $(BIN)/python -m pytest -q tests/test_report.py \
		-k browser
	@echo "screenshots: build/report-check/cells.png build/report-check/mars.png"

clean:
	rm -rf build data/demo .pytest_cache .ruff_cache
