"""The configs' train loop stops before the first step, with the key, folder and layout, when the data are missing:
through tools/train.py and through `mim train`, whose script is mmpretrain's."""
import sys

import pytest

from conftest import REPO_ROOT, TINY_CONFIG, bin_path, run_cli


@pytest.mark.parametrize('entry', ['tools/train.py', 'mim train mmpretrain'])
def test_training_stops_before_the_first_step_without_the_data(entry, tmp_path):
    """CheckedEpochBasedTrainLoop (the configs' train loop) checks before mmengine builds the loader."""
    command = ([sys.executable, REPO_ROOT / 'tools' / 'train.py'] if entry == 'tools/train.py'
               else [bin_path('mim'), 'train', 'mmpretrain'])
    result = run_cli([*command, TINY_CONFIG, '--work-dir', tmp_path / 'work'], cwd=tmp_path)  # no data/digits here
    assert result.returncode != 0
    assert ('FileNotFoundError: train_dataloader.dataset: the folder '
            f'{tmp_path / "data" / "digits" / "train"} (data_root=') in result.stderr, result.stderr[-2000:]
    assert 'python tools/prepare_digits.py' in result.stderr
    assert not list(tmp_path.rglob('*.pth'))
