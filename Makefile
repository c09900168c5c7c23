# Thin aliases for dev.py, which bootstraps uv and the locked environment by itself.
PY ?= python3

.PHONY: help demo test lint bench
help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
demo:  ## run the end-to-end demo on the in-memory backend
	$(PY) dev.py demo
test:  ## run every test
	$(PY) dev.py test
lint:  ## ruff and mypy --strict
	$(PY) dev.py lint
bench:  ## run the benchmarks
	$(PY) dev.py bench
