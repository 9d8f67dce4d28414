# Every target creates .venv on first use, so a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest docs charts dist test-wheel bench soak test-all-pythons clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,docs,uvloop]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m loopthread demo

lint: $(STAMP)
	$(BIN)/ruff check loopthread tests perf examples docs
	$(BIN)/ruff format --check loopthread tests perf examples docs

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest docs test-wheel

# The documentation site (mkdocs.yml, sources in docs/) into site/, in strict mode: a broken link,
# an unknown cross-reference or a docstring that fails to render fails the build. It builds
# offline. NO_MKDOCS_2_WARNING silences Material's banner about MkDocs 2.0, which is news, not a
# warning about this site. The code samples of docs/ and README.md run in tests/test_docs.py.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The benchmark charts of docs/benchmarks.md (docs/img/*.png), drawn from perf/results/*.json,
# which every benchmark writes (make bench rewrites both).
charts: $(STAMP)
	$(BIN)/python -m perf.charts

# sdist and wheel in dist/ (built from the sdist, as pip would), checked by twine and by
# tests/_dist_check.py: every module of loopthread/ and py.typed in the wheel, the LICENSE in
# both, metadata PyPI accepts, the pytest plugin's entry point, nothing else in the wheel.
# build/ and the egg-info go first: setuptools reuses a stale SOURCES.txt, which would hide a
# module that the package configuration leaves out.
dist: $(STAMP)
	rm -rf dist build loopthread.egg-info
	$(BIN)/python -m build --outdir dist . >$(VENV)/build.log 2>&1 || { cat $(VENV)/build.log; exit 1; }
	$(BIN)/twine check --strict dist/*
	$(BIN)/python -m tests._dist_check dist

# The built wheel installed in a fresh virtualenv (by .venv's pip: the new one needs none), and
# a subset of the suite run against it from a copy of tests/ outside the repository, so that
# nothing can import the source tree:
# test_installed.py checks loopthread comes from that venv's site-packages (a wheel, not an
# editable install), that every module it lists imports, and that the LICENSE is installed; the
# public API (py.typed), the pytest plugin (loaded by its entry point), python -m loopthread
# demo, the examples and the main components' tests run on the installed copy too.
WHEEL_TESTS ?= test_installed.py test_public_api.py test_pytest_plugin.py \
	test_testing_helpers.py test_demo.py test_examples.py test_loopthread.py test_blocking.py \
	test_channel.py test_eventbus.py test_logging.py test_structlog.py test_resource.py

test-wheel: dist
	@set -e; tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/loopthread-wheel.XXXXXX"); \
	trap 'rm -rf "$$tmp"' EXIT; \
	echo "== installing dist/$$(cd dist && ls *.whl) into a fresh venv in $$tmp"; \
	$(PYTHON) -m venv --without-pip "$$tmp/venv"; \
	$(BIN)/python -m pip --python "$$tmp/venv/bin/python" install --quiet "$$(ls dist/*.whl)[test]"; \
	cp -R tests examples "$$tmp/"; find "$$tmp/tests" -name __pycache__ -prune -exec rm -rf {} +; \
	cd "$$tmp" && LOOPTHREAD_TEST_INSTALLED="$$tmp/venv" "$$tmp/venv/bin/python" -m pytest -q \
	  -p no:cacheprovider -c "$(CURDIR)/pyproject.toml" --rootdir "$$tmp" \
	  $(addprefix tests/,$(WHEEL_TESTS))

bench: $(STAMP)
	$(BIN)/python -m perf
	$(BIN)/python -m perf.charts

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
	rm -rf $(VENV) .venv-* .mypy_cache .pytest_cache .ruff_cache build dist site *.egg-info
