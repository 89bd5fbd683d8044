# Two entry points: `make train` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_DEPS := $(VENV)/.deps-installed
STAMP_BUILD := $(VENV)/.ext-built
CPP_SOURCES := $(wildcard src_cpp/*.cpp src_cpp/*.h) CMakeLists.txt setup.py pyproject.toml

.PHONY: setup build train test lint format bench clean

setup: $(STAMP_DEPS)

# torchrec declares the CUDA fbgemm-gpu, so it goes in with --no-deps and its runtime
# dependencies are listed by hand; the constraint keeps pip from pulling another torch.
$(STAMP_DEPS): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps torchrec==1.8.0
	touch $@

# The extension is built without build isolation so it compiles against the pinned
# CPU torch already in the venv.
$(STAMP_BUILD): $(STAMP_DEPS) $(CPP_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(STAMP_BUILD)

train: build
	$(PY) -m torchrec_ascend.train --dataset beauty --model hstu --config beauty \
		--output-dir runs/beauty-hstu --resume

test: build
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check torchrec_ascend tests benchmarks
	$(VENV)/bin/ruff format --check torchrec_ascend tests benchmarks

format: setup
	$(VENV)/bin/ruff format torchrec_ascend tests benchmarks

clean:
	rm -rf build *.egg-info torchrec_ascend/_C*.so
