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


def run_cli(args, cwd: Path, timeout: int = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment (plus ``extra_env``) and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='2', **extra_env)
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    return result


def bin_path(name: str) -> str:
    """An executable of the interpreter's environment (e.g. ``mim``)."""
    return str(Path(sys.executable).parent / name)
