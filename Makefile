# Every target creates .venv on first use, so a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench soak test-all-pythons clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,uvloop]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m loopthread demo

lint: $(STAMP)
	$(BIN)/ruff check loopthread tests perf examples
	$(BIN)/ruff format --check loopthread tests perf examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m perf

soak: $(STAMP)
	LOOPTHREAD_SOAK=1 $(BIN)/python -m pytest -q tests/reliability --timeout=1800

# The suite on every interpreter found (not part of `make test`): for each version in PYTHONS,
# pyenv's build or pythonX.Y on PATH gets its own .venv-X.Y (rebuilt when pyproject.toml
# changes). Prints which passed; fails if any failed. One interpreter: make test-all-pythons
# PYTHONS=3.13. Extra pytest arguments: PYTEST_ARGS='tests/reliability -x'.
# 3.13t is the free-threaded build (GIL off), looked for as python3.13t on PATH or in
# /opt/python3.13t (the `test` extra only: no uvloop, ruff or mypy there; hypothesis from its last pure-Python wheel: newer ones
# compile a Rust part, which needs crates.io). To build it (~3 min on 2 cores): add a deb-src line for
# Debian trixie, `apt-get source --download-only python3.13`, unpack the orig tarball, then
# `./configure --disable-gil --prefix=/opt/python3.13t --with-ensurepip=install && make -j2
# && make install` (build deps: build-essential libssl-dev zlib1g-dev libffi-dev
# libsqlite3-dev libbz2-dev liblzma-dev libreadline-dev uuid-dev).
PYTHONS ?= 3.11 3.12 3.13 3.13t
PYTEST_ARGS ?=

test-all-pythons:
	@summary=""; status=0; \
	for ver in $(PYTHONS); do \
	  py=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$ver*/bin/python$$ver 2>/dev/null | tail -n 1); \
	  if [ -z "$$py" ] && python$$ver -c '' 2>/dev/null; then py=$$(command -v python$$ver); fi; \
	  if [ -z "$$py" ] && [ -x /opt/python$$ver/bin/python$$ver ]; then py=/opt/python$$ver/bin/python$$ver; fi; \
	  case $$ver in *t) extras=test; only=--only-binary=hypothesis;; *) extras=dev,uvloop; only=;; esac; \
	  if [ -z "$$py" ]; then summary="$$summary\n  python$$ver: not found, skipped"; continue; fi; \
	  venv=.venv-$$ver; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    echo "== building $$venv with $$py"; \
	    { $$py -m venv $$venv && $$venv/bin/python -m pip install --quiet --upgrade pip \
	      && $$venv/bin/python -m pip install --quiet $$only -e ".[$$extras]" && touch $$venv/.installed; } \
	    || { summary="$$summary\n  python$$ver: venv build FAILED"; status=1; continue; }; \
	  fi; \
	  full=$$($$venv/bin/python -c 'import platform; print(platform.python_version())'); \
	  echo "== python $$full: pytest $(PYTEST_ARGS)"; \
	  if $$venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); then \
	    summary="$$summary\n  python $$full: passed"; \
	  else summary="$$summary\n  python $$full: FAILED"; status=1; fi; \
	done; \
	printf "== test-all-pythons$$summary\n"; exit $$status

clean:
	rm -rf $(VENV) .venv-* .mypy_cache .pytest_cache .ruff_cache build *.egg-info
