# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the pinned, tested versions (constraints.txt pins torch==2.13.0).
# `make test` also installs the Debian MIDI renderers the catalogue tests use (see system-deps).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := outputs/demo
# The reference catalogue's renderers (training/catalogue.py): fluidsynth + FluidR3 GM, timidity + freepats.
APT_PACKAGES := fluidsynth fluid-soundfont-gm timidity freepats
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
FREEPATS := /etc/timidity/freepats.cfg
CATALOGUE_MINUTES ?= 30

.PHONY: install demo test bench lint clean system-deps catalogue

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

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# Installs the renderers with apt-get when any is missing (as root, else through sudo); a no-op when present.
# Without apt-get, or without root and sudo, it stops with the packages to install (the tests need them).
system-deps:
	@if command -v fluidsynth >/dev/null && command -v timidity >/dev/null \
			&& [ -f $(SOUNDFONT) ] && [ -f $(FREEPATS) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "error: no apt-get; install $(APT_PACKAGES) yourself"; exit 1; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
		echo "error: not root and no sudo; install $(APT_PACKAGES)"; exit 1; fi; \
	echo "installing $(APT_PACKAGES)"; \
	$$SUDO apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)

# The reference catalogue the bundled model trains on (fluidsynth) and its held-out twin: the same music,
# seed 0, rendered by timidity with freepats' different samples.
catalogue: $(STAMP) system-deps
	$(BIN)/python -m training.catalogue data/catalogue --minutes $(CATALOGUE_MINUTES) --seed 0
	$(BIN)/python -m training.catalogue data/heldout --minutes $(CATALOGUE_MINUTES) --seed 0 --renderer timidity

bench: $(STAMP)
	$(BIN)/python benchmarks/reconstruction.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
