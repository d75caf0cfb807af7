# Two commands do all set-up: `make lab` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lab test test-threads refresh clean

# Reinstalled only when pyproject.toml or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[notebooks,dev,browser,bench]"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) notebooks/

# MINIMAMBA_QUICK=1 shrinks training sizes in tests and notebooks (never the code path).
test: $(STAMP)
	MINIMAMBA_QUICK=1 MPLBACKEND=agg $(PY) -m pytest --nbval
	MINIMAMBA_QUICK=1 $(PY) examples/run_mamba_example.py

# Strict nbval under 1 and then 2 CPU threads. The thread count changes the order of PyTorch's
# reductions the way another machine does, so committed outputs must not depend on it.
test-threads: $(STAMP)
	for t in 1 2; do \
	  echo "== strict nbval, OMP_NUM_THREADS=$$t"; \
	  OMP_NUM_THREADS=$$t MKL_NUM_THREADS=$$t MINIMAMBA_QUICK=1 MPLBACKEND=agg \
	    $(PY) -m pytest --nbval -q notebooks/ || exit 1; \
	done

# Re-execute every notebook so the committed outputs are fresh (run after any package change).
refresh: $(STAMP)
	MINIMAMBA_QUICK=1 $(PY) tools/refresh_outputs.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
