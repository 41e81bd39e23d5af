# Two commands do the whole set-up on a fresh machine:
#   make demo   - install, fetch MNIST, train, forget 30 % with seven methods (retraining, the
#                 history-based ones and the convex baselines), print the table, write plots
#   make test   - install and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: venv demo test lint clean

venv: $(VENV)/.installed-dev

# what the demo runs: the package and its runtime dependencies only
$(VENV)/.installed-run: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

# what the tests need on top: pytest, hypothesis, ruff, and Ray for the cluster backend's tests
$(VENV)/.installed-dev: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,cluster]'
	touch $@

demo: $(VENV)/.installed-run
	$(BIN)/miniunlearn fetch mnist
	$(BIN)/miniunlearn bench --dataset mnist --model logreg --ratios 0.3 --seeds 1 \
		--methods retrain,deltagrad,warmstart,nystrom,mini,finetune,neggrad,newton \
		--runs-dir $(DEMO_OUT)/runs --json $(DEMO_OUT)/results.json --plots $(DEMO_OUT)/plots

test: venv
	$(BIN)/miniunlearn --quiet fetch all
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
