# Every target sets up what it needs first (tools/setup_env.sh skips what is already installed).
PYTHON := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo
setup:
	bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

demo: setup
	$(PYTHON) tools/demo.py
