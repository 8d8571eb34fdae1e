# `make run` and `make test` each create .venv when missing, install what they need, and run.
# CPU torch is pinned for the test setup so CI never downloads a multi-GB CUDA build;
# on a GPU machine use e.g. `make run TORCH_SPEC=torch` to get your platform's CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(subst =,_,$(subst >,_,$(TORCH_SPEC)))
ARGS ?=

.PHONY: run test lint doctor bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	echo "$(TORCH_SPEC)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e ".[dev,twitch,obs,train]"
	touch $@

run: $(STAMP)
	$(BIN)/streamer run $(ARGS)

test: $(STAMP)
	bash .ci/system-deps.sh
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check streamer kernels tests tools experiments
	$(BIN)/mypy streamer kernels tools

doctor: $(STAMP)
	$(BIN)/streamer doctor $(ARGS)

bench: $(STAMP)
	$(BIN)/streamer bench pipeline $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
