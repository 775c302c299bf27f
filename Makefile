# The two front doors (see README): `make demo` and `make test`.
# Both build .venv on first use; nothing else on the machine is touched.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Every process started from here keeps DDS on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

.PHONY: demo test lint setup

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[ros,train,dev]'
	touch $(STAMP)

demo: $(STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-77} $(BIN)/diffmf_demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
