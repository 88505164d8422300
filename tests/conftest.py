"""Shared fixtures: the repository root, a real image set written once per session, and a CLI runner."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-coslr-20e_digits.py'
sys.path.insert(0, str(REPO_ROOT / 'tools'))


@pytest.fixture(scope='session')
def digits_workspace(tmp_path_factory) -> Path:
    """A folder holding ``data/digits`` (scikit-learn's digits as PNGs), to be used as the working directory."""
    from prepare_digits import prepare_digits
    workspace = tmp_path_factory.mktemp('workspace')
    prepare_digits(workspace / 'data' / 'digits')
    return workspace


# The resume tests compare two trainings bit for bit, so both must sum in the same order. Besides a fixed thread
# count, Intel's conditions for run-to-run reproducible MKL (torch's CPU BLAS here) are threads that MKL and OpenMP
# may not adjust at run time and a CNR branch (MKL_CBWR), which fixes MKL's reductions and scheduling.
REPRODUCIBLE_THREADS = {'OMP_NUM_THREADS': '2', 'OMP_DYNAMIC': 'FALSE', 'MKL_DYNAMIC': 'FALSE', 'MKL_CBWR': 'AUTO'}


def cli_env(**extra_env: str) -> dict:
    """The environment of a command line run by a test: this interpreter's, the repository on ``PYTHONPATH``,
    ``REPRODUCIBLE_THREADS`` and ``extra_env``."""
    return {**os.environ, 'PYTHONPATH': str(REPO_ROOT), **REPRODUCIBLE_THREADS, **extra_env}


def run_cli(args, cwd: Path, timeout: int = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a command in ``cli_env(**extra_env)`` and capture its output."""
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=cli_env(**extra_env), capture_output=True, text=True,
                            timeout=timeout)
    return result


SUBSET = 256  # the first 256 training images (mmengine's ``indices``): 2 iterations of 128 per epoch
SHORT_RUN = ['--cfg-options', f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}',
             'train_cfg.max_epochs=2', 'default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=2']


def train_two_short_epochs(config: Path, work_dir: Path, cwd: Path) -> str:
    """Train ``config`` for ``SHORT_RUN`` through tools/train.py and return its log, having checked that it ran:
    a finite loss logged at the end of each epoch and a kNN top-1 after the last."""
    import re
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir, *SHORT_RUN],
                     cwd=cwd)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    losses = [float(loss) for loss in re.findall(r'Epoch\(train\) +\[\d\]\[\d/2\].*? loss: (\d+\.\d+)', log)]
    assert len(losses) == 2 and all(0 < loss < float('inf') for loss in losses), log[-3000:]
    assert re.search(r'knn/top1: \d+\.\d+', log), log[-3000:]
    return log


def bin_path(name: str) -> str:
    """An executable of the interpreter's environment (e.g. ``mim``)."""
    return str(Path(sys.executable).parent / name)


def load_checkpoint(path: Path) -> dict:
    """An mmengine checkpoint, read as ``--resume`` reads it (torch's default ``weights_only=True``)."""
    import torch

    import pic_plugin  # noqa: F401  (allow-lists what mmengine checkpoints hold)
    return torch.load(path)


def assert_same_training_state(a, b, where: str = 'checkpoint') -> None:
    """Two checkpoints (or parts of one) are identical: every tensor, number and name, nested in any way.

    Comparing ``state_dict`` and ``optimizer`` this way covers the weights, every buffer (tables, momentum and
    last-update steps, NCE's Z, step counters) and the optimiser state (momentum, lazy-correction transitions).
    """
    import torch
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_training_state(a[key], b[key], f'{where}[{key!r}]')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for position, (item_a, item_b) in enumerate(zip(a, b)):
            assert_same_training_state(item_a, item_b, f'{where}[{position}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def assert_same_checkpoint(expected_path: Path, got_path: Path) -> dict:
    """Two checkpoint files hold the same epoch, iteration, ``state_dict`` and ``optimizer``; returns the second.

    ``state_dict`` covers the weights and buffers (rows, FIFO, bank, Z, step counters), ``optimizer`` the SGD state.
    """
    expected, got = load_checkpoint(expected_path), load_checkpoint(got_path)
    assert (expected['meta']['epoch'], expected['meta']['iter']) == (got['meta']['epoch'], got['meta']['iter'])
    for part in ('state_dict', 'optimizer'):
        assert_same_training_state(expected[part], got[part], part)
    return got


def pytest_report_header(config) -> str:
    """Which CPU kernels ATen runs (set with ATEN_CPU_CAPABILITY; see tools/ci/unit_tests_per_cpu_capability.sh)."""
    import torch
    return f'ATen CPU capability: {torch.backends.cpu.get_cpu_capability()}'
