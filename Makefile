# Entry points: run, test, check, bench. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
SOURCES := relay widget dashboard tests bench
LOCALE_DIR ?= relay/locale

.PHONY: install translations messages run test check format bench chromium nginx dovecot axe clean

install: $(STAMP) translations

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	touch $(STAMP)

# Compiles each catalogue's .po to the .mo the relay reads; the .mo files are
# build products, ignored by git. The relay compiles a stale one in memory too.
translations: $(STAMP)
	$(BIN)/pybabel compile -d $(LOCALE_DIR) -D messages

# Extracts every translatable text (babel.cfg) and adds the new ones to each
# catalogue, then compiles. docs/translations.md explains the rest.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ --add-location=file --sort-output \
	  --project "Victim Support Online" -o $(LOCALE_DIR)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) -D messages \
	  --no-fuzzy-matching --ignore-obsolete
	$(MAKE) translations

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

# The accessibility tests inject axe-core from the npm registry into served pages.
AXE_VERSION := 4.14.1
AXE := $(VENV)/npm/node_modules/axe-core/axe.min.js
axe: $(AXE)

$(AXE):
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq npm; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq npm; fi; \
	fi
	npm install --prefix $(VENV)/npm --no-save --no-audit --no-fund axe-core@$(AXE_VERSION)

test: install chromium nginx dovecot axe
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
