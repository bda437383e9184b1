# sopkit: `make demo` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck check-playbooks schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(DEVSTAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(DEVSTAMP)

## demo: simulate the shipped retail playbook over the CDNOW history and print the summary
demo: $(STAMP)
	$(VENV)/bin/sopkit check playbooks/retail.toml
	$(VENV)/bin/sopkit simulate playbooks/retail.toml \
	    --events data/cdnow/events.jsonl.gz --profiles data/cdnow/profiles.jsonl.gz \
	    --end 1998-12-31 --out demo-actions.jsonl

## test: lint, type-check and run the whole suite
test: $(DEVSTAMP)
	$(VENV)/bin/ruff check sopkit tests examples
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check sopkit tests examples

typecheck: $(DEVSTAMP)
	$(VENV)/bin/mypy

## schema: regenerate schema/*.schema.json from the models
schema: $(STAMP)
	$(VENV)/bin/sopkit schema > schema/playbook.schema.json
	$(VENV)/bin/sopkit schema --fragment > schema/fragment.schema.json

clean:
	rm -rf $(VENV) demo-actions.jsonl *.egg-info
