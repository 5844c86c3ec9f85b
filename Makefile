# One virtual environment, made from the project's own requirements (pip resolves torch from
# the local wheels where they exist). Every target creates what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: venv test test-portable test-slow lint demo docs bench bench-zoo bench-zoo-quick clean

$(STAMP): pyproject.toml tests/plugin_dist/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,devinterp,hf,timm,lightning,dask,reference]"
	$(BIN)/pip install --quiet ./tests/plugin_dist
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)  ## the default suite (fast; slow tests excluded)
	$(BIN)/ruff check .
	$(BIN)/pytest

test-portable: $(STAMP)  ## the default suite with other CPU kernels and one thread (what another machine computes)
	MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(BIN)/pytest -p no:cacheprovider

test-slow: $(STAMP)  ## only the slow tests (training runs, paper-scale checks)
	$(BIN)/pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)  ## the whole pipeline on a small built-in example; outputs in demo_out/
	$(BIN)/complexity-zoo demo --out demo_out

$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## the documentation site, built with --strict (broken links, missing references fail); output in site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)  ## benchmarks (by hand; never part of the tests)
	@for b in benchmarks/[!_]*.py; do case $$b in */zoo.py) continue;; esac; echo "== $$b"; $(BIN)/python $$b || exit 1; done

bench-zoo: $(STAMP)  ## every measure at 0.19M-124M parameters, peers, memory (26 min on 2 idle cores); results in benchmarks/_out/
	$(BIN)/python benchmarks/zoo.py --out benchmarks/_out/results

bench-zoo-quick: $(STAMP)  ## the same on MLP, 10M LM, ResNet-18 with 2 checkpoints (344 s on 2 idle cores)
	$(BIN)/python benchmarks/zoo.py --quick --out benchmarks/_out/results-quick

clean:
	rm -rf $(VENV) demo_out site .pytest_cache .ruff_cache
