# sopkit: `make demo` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test test-deep lint typecheck check-playbooks schema openapi clean bench \
        bench-quick bench-core-speed bench-campaign bench-one-customer bench-partition \
        bench-live bench-live-memory bench-history-keep bench-serve bench-serve-loop \
        bench-serve-limit bench-state-write \
        bench-engine-eval \
        bench-read valgrind fuzz mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server]' --config-settings editable_mode=compat
	touch $(STAMP)

$(DEVSTAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $(DEVSTAMP)

## demo: simulate the shipped retail playbook over the CDNOW history, print the summary and
## write demo-report.html (docs/report.md)
# The history ends on 1998-06-30; --end 1998-07-01 (00:00) stops right after its last day.
demo: $(STAMP)
	$(VENV)/bin/sopkit check playbooks/retail.toml
	$(VENV)/bin/sopkit simulate playbooks/retail.toml \
	    --events data/cdnow/events.jsonl.gz --profiles data/cdnow/profiles.jsonl.gz \
	    --end 1998-07-01 --out demo-actions.jsonl --report demo-report.html

## test: lint, type-check and run the whole suite, one pytest worker per CPU (pytest-xdist;
## PYTEST_WORKERS=0 runs it in one process)
PYTEST_WORKERS ?= auto
test: $(DEVSTAMP)
	$(VENV)/bin/ruff check sopkit tests examples benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal

## test-deep: the suite with the long property runs at full size (about 30 minutes): 2,000
## generated cases per engine differential, 60 partition cases, 48 SIGKILLs; `make test`
## runs 500, 15 and 12 of them (docs/testing.md)
test-deep: $(DEVSTAMP)
	SOPKIT_DIFF_EXAMPLES=2000 SOPKIT_PARTITION_EXAMPLES=60 SOPKIT_KILLS=48 $(PY) -m pytest \
	    -n $(PYTEST_WORKERS) --dist worksteal

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check sopkit tests examples benchmarks

typecheck: $(DEVSTAMP)
	$(VENV)/bin/mypy

## fuzz: tests/test_fuzz.py and test_fuzz_records.py with many examples (FUZZ_EXAMPLES, default 20000 per test; `make
## test` runs 40): mutated playbooks, conditions and templates fail only with located errors
FUZZ_EXAMPLES ?= 20000
fuzz: $(DEVSTAMP)
	SOPKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py tests/test_fuzz_records.py

## schema: regenerate schema/*.schema.json from the models
schema: $(STAMP)
	$(VENV)/bin/sopkit schema > schema/playbook.schema.json
	$(VENV)/bin/sopkit schema --fragment > schema/fragment.schema.json

## openapi: regenerate docs/openapi.json, the OpenAPI document of `sopkit serve` (docs/http.md)
openapi: $(DEVSTAMP)
	$(PY) -m sopkit._serve.openapi_doc docs/openapi.json

clean:
	rm -rf $(VENV) demo-actions.jsonl demo-report.html *.egg-info

## bench: end-to-end benchmarks, 1M customers included (about 100 minutes); benchmarks/results.json,
## .md (benchmarks/README.md)
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

## bench-quick: the same measurements on 300 customers, in seconds; RESULTS=path to choose the file
bench-quick: $(STAMP)
	$(PY) benchmarks/bench.py --quick $(if $(RESULTS),--results $(RESULTS))

## bench-core-speed: native simulate CPU of BEFORE (a clone at the base commit; default
## /work/main) against this one and the limit, interleaved, on CDNOW and 10k generated
## customers, this venv's python for both (a few minutes); benchmarks/core-speed-results.json, .md
bench-core-speed: $(STAMP)
	$(PY) benchmarks/bench_core_speed.py --before $(or $(BEFORE),/work/main) $(if $(ROUNDS),--rounds $(ROUNDS))

## bench-campaign: campaign audiences over 1M stored customers (store generated once, cached);
## benchmarks/campaign-results.json, .md; CUSTOMERS=N for another size
bench-campaign: $(STAMP)
	$(PY) benchmarks/bench_campaign.py $(if $(CUSTOMERS),--customers $(CUSTOMERS))

## bench-one-customer: one customer with 10k, 100k and 1M events in 30-day windows (a few
## minutes): the cost per event stays flat; benchmarks/one-customer-results.json, .md;
## SIZES=10k,20k for others
bench-one-customer: $(STAMP)
	$(PY) benchmarks/bench_one_customer.py $(if $(SIZES),--sizes $(SIZES))

## bench-read: reading and checking a history, before and after issue 17 (sopkit as of the
## commit before sopkit/_json.py, unpacked with git archive), on generated 10k and 100k
## histories and CDNOW, and simulate's CPU seconds on 10k with outputs compared (about 10
## minutes); benchmarks/read-results.json, .md; ARGS= for other options (--big 0, --rounds 1)
bench-read: $(STAMP)
	$(PY) benchmarks/bench_read.py $(ARGS)

## bench-partition: `simulate --workers 1` against `--workers 2` on the 100k-customer history
## (about 10 minutes), outputs compared byte for byte; benchmarks/partition-results.json, .md;
## CUSTOMERS=N, WORKERS=1,2,3 for others; EXECUTOR=dask also runs each count above 1 on a
## Dask LocalCluster (installs sopkit[dask])
bench-partition: $(STAMP)
	$(if $(filter dask,$(EXECUTOR)),$(PY) -m pip install --quiet -e '.[dask]' \
	    --config-settings editable_mode=compat)
	$(PY) benchmarks/bench_partition.py $(if $(CUSTOMERS),--customers $(CUSTOMERS)) \
	    $(if $(WORKERS),--workers $(WORKERS)) $(if $(EXECUTOR),--executor $(EXECUTOR))

## bench-live: `sopkit run` (SQLite, and PostgreSQL when its server binaries are installed)
## against `sopkit simulate` on the first 20,000 CDNOW events with jsonl channels, side by
## side (a few minutes); benchmarks/live-results.json, .md, profile-live-sqlite.txt; EVENTS=N
bench-live: $(STAMP)
	$(PY) benchmarks/bench_live.py $(if $(EVENTS),--events $(EVENTS))

## bench-state-write: writing every customer's stored state after 20,000 CDNOW events (under
## a minute), µs per customer; BEFORE=DIR also measures that source tree in turns and checks
## its bytes are the same; benchmarks/state-write-results.json, .md
bench-state-write: $(STAMP)
	$(PY) benchmarks/bench_state_write.py $(if $(BEFORE),--src $(BEFORE) --label before)

## bench-live-memory: `sopkit run` with a day of events over generated stores of 500k and 5M
## customers (stores generated once, cached; about 15 minutes the first time): peak RSS stays
## flat; benchmarks/live-memory-results.json, .md; SIZES=500000 for one size
bench-live-memory: $(STAMP)
	$(PY) benchmarks/bench_live_memory.py $(if $(SIZES),--sizes $(SIZES))

## bench-history-keep: `serve --history-keep` deleting 100k of 200k kept records in SQLite (under
## a minute): rows deleted a second, longest transaction, file size; benchmarks/
## history-keep-results.json, .md; ROWS=N for another size
bench-history-keep: $(STAMP)
	$(PY) benchmarks/bench_history_keep.py $(if $(ROWS),--rows $(ROWS))

## bench-serve: `sopkit serve` on loopback under concurrent clients (about 2 minutes): accepted
## events/s single and in batches of 100, p50/p99 latency, lag from 202 to the committed
## decision; benchmarks/serve-results.json, .md; ARGS="--quick" for a shorter run
bench-serve: $(DEVSTAMP)
	$(PY) benchmarks/bench_serve.py --notes benchmarks/serve-profile.md $(ARGS)

## bench-serve-limit: `sopkit serve` and its limit (benchmarks/serve_limit.py: the same service
## by hand, no sopkit; its loop a thread, then a process of its own) under bench-serve's load,
## in turns, 2 rounds (about 5 minutes); benchmarks/serve-limit-results.json, .md
bench-serve-limit: $(DEVSTAMP)
	$(PY) benchmarks/bench_serve_limit.py $(ARGS)

## bench-engine-eval: one evaluation, native against durable, on every 10th facts vector of the
## CDNOW demo history (a few minutes): what the durable engine adds per evaluation and to a run;
## benchmarks/engine-eval-results.json, .md
bench-engine-eval: $(DEVSTAMP)
	$(PY) benchmarks/bench_engine_eval.py $(ARGS)

## bench-serve-loop: `sopkit serve`'s live loop alone applying a pre-filled inbox of 100,000
## purchases, durable and native engines (a few minutes); benchmarks/serve-loop-results.json,
## .md; ARGS="--src DIR --label NAME" to measure another source tree beside this one (A/B)
bench-serve-loop: $(DEVSTAMP)
	$(PY) benchmarks/bench_serve_loop.py $(ARGS)

## valgrind: the durable-engine and differential tests under valgrind (slow; not run in CI)
# Only errors count: invalid reads/writes, uses of uninitialised values, bad frees, and
# definitely lost blocks. Python leaves "possibly lost" and "still reachable" blocks at exit,
# and durable rulesets are never freed on purpose (they stay reachable), so neither counts.
VALGRIND_EXAMPLES ?= 25
valgrind: $(DEVSTAMP)
	@command -v valgrind >/dev/null 2>&1 || { \
	    echo "valgrind is not installed; install it with: sudo apt-get install valgrind" >&2; \
	    exit 2; }
	SOPKIT_DIFF_EXAMPLES=$(VALGRIND_EXAMPLES) PYTHONMALLOC=malloc valgrind --quiet \
	    --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
	    --errors-for-leak-kinds=definite --suppressions=tests/valgrind.supp \
	    $(PY) -m pytest -q -p no:cacheprovider tests/test_durable_engine.py \
	    tests/test_differential.py -k "not hundred_thousand"

## mutation: mutation testing of the core modules (not part of `make test`: all of them take
## many hours); MUTATION_ARGS to choose, e.g. "--module _runtime/policy --sample 40 --seed 1";
## benchmarks/mutation-results.md, .json (docs/testing.md#mutation-testing)
mutation: $(DEVSTAMP)
	nice -n 15 $(PY) benchmarks/mutation.py $(MUTATION_ARGS)
