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

# Downloads from PyPI are sometimes cut off mid-file (CI once failed on ruff at 9.4 of 10.6 MB): pip resumes a
# cut-off file (--resume-retries, pip >= 25.1, hence the upgrade first), and each install is tried three times.
PIP     := $(BIN)/python -m pip install -q --retries 10
RESUME  := --resume-retries 20
EXTRAS  := .[ros,train,dev]
retry = for try in 1 2 3; do $(1) && break; \
	if [ $$try = 3 ]; then echo "pip install failed 3 times: $(1)" >&2; exit 1; fi; \
	echo "pip install failed (try $$try of 3), again in 15 s" >&2; sleep 15; done

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(call retry,$(PIP) --upgrade pip)
	$(call retry,$(PIP) $(RESUME) torch==2.13.0)
	$(call retry,$(PIP) $(RESUME) -e '$(EXTRAS)')
	touch $(STAMP)

demo: $(STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-77} $(BIN)/diffmf_demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
