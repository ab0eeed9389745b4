# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the pinned, tested versions (constraints.txt pins torch==2.13.0).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := outputs/demo

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt "torch==2.13.0"
	$(BIN)/pip install --quiet --constraint constraints.txt --editable ".[dev]"
	touch $@

# Round trip on a sound the project makes itself: audio -> spectrogram PNG -> audio.
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/python -m spectrodiff.signals $(DEMO)/source.wav --kind mix --seconds 10
	$(BIN)/spectrodiff audio-to-image $(DEMO)/source.wav -o $(DEMO)/source.png --overwrite
	$(BIN)/spectrodiff image-to-audio $(DEMO)/source.png -o $(DEMO)/roundtrip.wav --overwrite
	$(BIN)/spectrodiff info $(DEMO)/source.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/reconstruction.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
