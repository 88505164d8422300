# Every target sets up what it needs first (tools/setup_env.sh skips what is already installed).
PYTHON := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-pretrain test demo
# the whole stack: mmcv with its C++ ops, mmdet, mmseg, mim, the test tools
setup:
	bash tools/setup_env.sh

# pre-training, kNN and the linear probe only: nothing is compiled
setup-pretrain:
	PIC_PROFILE=pretrain bash tools/setup_env.sh

# style (flake8, then isort's import order; both configured in setup.cfg, 120 columns), the whole suite, then the
# unit tests again under each CPU kernel family torch can pick here
test: setup
	$(PYTHON) -m flake8 pic_plugin tools tests configs
	$(PYTHON) -m isort --check-only --diff pic_plugin tools tests configs
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)
	PYTHON=$(PYTHON) bash tools/ci/unit_tests_per_cpu_capability.sh

demo: setup-pretrain
	$(PYTHON) tools/demo.py
