# Entry points: run, test, check, bench. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
SOURCES := relay widget dashboard tests bench

.PHONY: install run test check format bench chromium nginx dovecot clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	touch $(STAMP)

run: install
	$(BIN)/vso serve

# Browser tests drive Debian's Chromium; install it when it is missing.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; \
	fi

# The reverse-proxy tests run Debian's nginx; install it when it is missing.
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && RUNLEVEL=1 apt-get install -y -qq nginx; \
	  else sudo apt-get update -qq && sudo RUNLEVEL=1 apt-get install -y -qq nginx; fi; \
	fi

# The mail tests run Debian's Dovecot as their IMAP server; install it when missing.
dovecot:
	@if ! command -v dovecot >/dev/null && [ ! -x /usr/sbin/dovecot ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && RUNLEVEL=1 apt-get install -y -qq dovecot-imapd; \
	  else sudo apt-get update -qq && sudo RUNLEVEL=1 apt-get install -y -qq dovecot-imapd; fi; \
	fi

test: install chromium nginx dovecot
	$(BIN)/pytest

# The relay against a raw websockets relay, then the chat page's weight without
# scripts. Writes bench/results/latest.json, bench/results/page_weight.json and
# the results in docs/benchmarks.md. About ten minutes on two cores.
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py
	$(BIN)/python bench/page_weight.py

check: install
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/mypy

format: install
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
