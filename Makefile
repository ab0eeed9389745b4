# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the pinned, tested versions (constraints.txt pins torch==2.13.0).
# `make test` also installs the Debian MIDI renderers the catalogue tests use (see system-deps).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CATALOGUE := data/catalogue
HELDOUT := data/heldout
CATALOGUE_V1 := data/catalogue-v1
MINI_DATASET := data/mini-dataset
MUSIC_DATASET := data/mini-music-dataset
BEAT_DATASET := data/mini-v3-dataset
MINI := spectrodiff/models/mini
RECORDINGS := data/recordings
# Real recordings for the vocoders (training/recordings.py): two sample packs to train on (a fifth held out) and
# Hydrogen's drum kits, which only the vocoder benchmark hears.
RECORDING_PACKAGES := sonic-pi-samples lmms-common hydrogen-drumkits
# Real music that no model or vocoder trains on, for the reconstruction benchmark (benchmarks/real_music.py).
HELDOUT_MUSIC_PACKAGES := warzone2100-music planetblupi-music-ogg
# The reference catalogue's renderers (training/rendering.py): fluidsynth with MuseScore General and avldrums'
# recorded kits (version 2) or FluidR3 GM (version 1), timidity + freepats (held out); the browser the studio's test
# drives (tests/test_web.py); and Open MPI, through which `accelerate launch --cpu` starts several processes (the
# multi-process tests).
APT_PACKAGES := fluidsynth fluid-soundfont-gm musescore-general-soundfont avldrums.lv2-soundfont timidity freepats \
	chromium openmpi-bin
CHROMIUM := /usr/bin/chromium
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
MUSESCORE := /usr/share/sounds/sf3/MuseScore_General_Full.sf3
AVLDRUMS := /usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2
FREEPATS := /etc/timidity/freepats.cfg
CATALOGUE_MINUTES ?= 120
CATALOGUE_V1_MINUTES := 30

.PHONY: install demo test test-fast serve bench bench-real-music bench-startup bench-mini bench-music bench-encode bench-vocoder bench-load lint \
	clean system-deps recording-deps heldout-music catalogue recordings mini vocoders

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt "torch==2.13.0"
	$(BIN)/pip install --quiet --constraint constraints.txt --editable ".[dev]"
	touch $@

# The main job on the bundled `mini` model, offline: a seamless loop and a 30 s morph, each a new folder in outputs/.
demo: $(STAMP)
	$(BIN)/spectrodiff generate "jazzy saxophone" --bpm 100 --bars 2
	$(BIN)/spectrodiff morph "jazzy saxophone" "electronic beats" --seconds 30

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# The fast core for contributors (under 2 minutes): everything but the tests marked slow or browser.
test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# apt-get install $(1) unless the shell test $(2) holds (as root, else through sudo). Without apt-get, or without
# root and sudo, it stops with the packages to install.
define apt_install
	@if $(2); then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "error: no apt-get; install $(1) yourself"; exit 1; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
		echo "error: not root and no sudo; install $(1)"; exit 1; fi; \
	echo "installing $(1)"; \
	$$SUDO apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1)
endef

# The renderers and the browser the tests need; a no-op when present.
system-deps:
	$(call apt_install,$(APT_PACKAGES),command -v fluidsynth >/dev/null && command -v timidity >/dev/null \
		&& [ -f $(SOUNDFONT) ] && [ -f $(MUSESCORE) ] && [ -f $(AVLDRUMS) ] && [ -f $(FREEPATS) ] \
		&& [ -x $(CHROMIUM) ] && command -v mpirun >/dev/null)

# The reference catalogue the bundled model trains on (version 2: 29 styles, 2 hours, fluidsynth, with stems), its
# held-out twin (the same music, seed 0, rendered by timidity with freepats' different samples), and version 1
# (8 styles, 30 minutes, FluidR3), on which mini's first four stages trained.
catalogue: $(CATALOGUE)/catalogue.json $(HELDOUT)/catalogue.json $(CATALOGUE_V1)/catalogue.json

$(CATALOGUE)/catalogue.json: | $(STAMP) system-deps
	$(BIN)/python -m spectrodiff.training.catalogue $(CATALOGUE) --minutes $(CATALOGUE_MINUTES) --seed 0

$(HELDOUT)/catalogue.json: | $(STAMP) system-deps
	$(BIN)/python -m spectrodiff.training.catalogue $(HELDOUT) --minutes $(CATALOGUE_MINUTES) --seed 0 --renderer timidity

$(CATALOGUE_V1)/catalogue.json: | $(STAMP) system-deps
	$(BIN)/python -m spectrodiff.training.catalogue $(CATALOGUE_V1) --minutes $(CATALOGUE_V1_MINUTES) --seed 0 --version 1

# Rebuilds the bundled model from nothing with the project's own commands (training/README.md has the wall times).
# Interrupted? Run it again: prepare skips finished files and each training stage resumes from its last checkpoint.
mini: catalogue recordings
	$(BIN)/spectrodiff prepare $(CATALOGUE_V1) -o $(MINI_DATASET) --n-mels 128 --hop 1.28 --workers 2
	$(BIN)/spectrodiff train $(MINI_DATASET) -o runs/mini-vae --config training/configs/mini-vae.yaml \
		$(if $(wildcard runs/mini-vae/run.json),--resume latest)
	$(BIN)/spectrodiff train $(MINI_DATASET) -o runs/mini --config training/configs/mini.yaml \
		$(if $(wildcard runs/mini/run.json),--resume latest)
	$(BIN)/python -m spectrodiff.training.decoder runs/mini $(MINI_DATASET) -o runs/mini-decoder --max-steps 1500 \
		$(if $(wildcard runs/mini-decoder/checkpoints),--resume latest)
	$(BIN)/spectrodiff train-vocoder $(CATALOGUE_V1) $(RECORDINGS)/train -o runs/vocoder-mini \
		--config training/configs/vocoder-mini.yaml $(if $(wildcard runs/vocoder-mini/run.json),--resume latest)
	$(BIN)/spectrodiff prepare $(CATALOGUE) -o $(MUSIC_DATASET) --n-mels 128 --hop 1.28 --workers 2
	$(BIN)/spectrodiff train $(MUSIC_DATASET) -o runs/mini-music --config training/configs/mini-music.yaml \
		$(if $(wildcard runs/mini-music/run.json),--resume latest)
	$(BIN)/spectrodiff prepare $(CATALOGUE) -o $(BEAT_DATASET) --n-mels 128 --columns-per-beat 32 --workers 2
	$(BIN)/spectrodiff train $(BEAT_DATASET) -o runs/mini-v3 --config training/configs/mini-v3.yaml \
		$(if $(wildcard runs/mini-v3/run.json),--resume latest)
	$(BIN)/python -m spectrodiff.training.decoder runs/mini-v3 $(BEAT_DATASET) -o runs/mini-v3-decoder --max-steps 600 \
		$(if $(wildcard runs/mini-v3-decoder/checkpoints),--resume latest)
	$(BIN)/python -m spectrodiff.training.bundle runs/mini-v3-decoder $(MINI) --vocoder runs/vocoder-mini

recording-deps:
	$(call apt_install,$(RECORDING_PACKAGES),[ -d /usr/share/sonic-pi/samples ] && [ -d /usr/share/lmms/samples ] \
		&& [ -d /usr/share/hydrogen/data/drumkits ])

recordings: $(RECORDINGS)/train

$(RECORDINGS)/train: | $(STAMP) recording-deps
	$(BIN)/python -m spectrodiff.training.recordings $(RECORDINGS)

# The bundled vocoder for Riffusion's parameters (512 bins); mini's (128 bins) is part of `make mini`.
vocoders: catalogue recordings
	$(BIN)/spectrodiff train-vocoder $(CATALOGUE_V1) $(RECORDINGS)/train -o runs/vocoder-riffusion \
		--config training/configs/vocoder-riffusion.yaml $(if $(wildcard runs/vocoder-riffusion/run.json),--resume latest)
	$(BIN)/python -m spectrodiff.training.bundle runs/vocoder-riffusion spectrodiff/models/vocoders/riffusion --vocoder-only

bench: $(STAMP)
	$(BIN)/python benchmarks/reconstruction.py

heldout-music:
	$(call apt_install,$(HELDOUT_MUSIC_PACKAGES),[ -d /usr/share/games/warzone2100/music ] \
		&& [ -d /usr/share/planetblupi/music ])

# Image -> audio on real music no model trains on: our default and every --vocoder against Riffusion's algorithm.
bench-real-music: $(STAMP) heldout-music
	$(BIN)/python benchmarks/real_music.py

# `spectrodiff --help`, every command's --help and the codec commands as whole processes.
bench-startup: $(STAMP)
	$(BIN)/python benchmarks/startup.py

# The bundled model's quality bars (prompt adherence, loops, long clips, speed, VAE); needs the catalogue.
bench-mini: catalogue
	$(BIN)/python benchmarks/mini.py

bench-music: catalogue
	$(BIN)/python benchmarks/music.py

# Refined encodings of input audio: closeness against steps, and a step's cost at Stable Diffusion's VAE size.
bench-encode: catalogue
	$(BIN)/python benchmarks/encode.py

# The vocoder benchmark on recordings no training heard; VOCODER=riffusion for the other bundled vocoder.
VOCODER ?= mini
bench-vocoder: recordings
	$(BIN)/python benchmarks/vocoder.py --vocoder $(VOCODER)

# The studio's load test: `spectrodiff serve` on loopback, 50 requests from 8 concurrent clients.
bench-load: $(STAMP)
	$(BIN)/python benchmarks/load.py

# The studio and API on http://127.0.0.1:7860/ (bundled model).
serve: $(STAMP)
	$(BIN)/spectrodiff serve

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
