"""End-to-end: the tiny config trains through tools/train.py and both `mim train` entry points on real images.

Each run uses the first 256 training images (mmengine's ``indices``), so an epoch is 2 iterations.
"""
import re
import shutil
import sys

import pytest

from conftest import REPO_ROOT, TINY_CONFIG, bin_path, run_cli

SUBSET = 256
SHORT_RUN = ['--cfg-options', f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}',
             'train_cfg.max_epochs=2', 'train_dataloader.batch_size=128', 'default_hooks.checkpoint.interval=1',
             'train_cfg.val_interval=2']


def assert_trained(result, work_dir):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (work_dir / 'epoch_2.pth').is_file()
    log = result.stdout + result.stderr
    assert re.search(r'Epoch\(train\) \[2\]\[2/2\].*loss: \d', log), log[-3000:]
    assert re.search(r'knn/top1: \d+\.\d+', log), log[-3000:]


def test_tools_train_then_tools_test(digits_workspace, tmp_path):
    work_dir = tmp_path / 'work'
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', TINY_CONFIG, '--work-dir', work_dir,
                      *SHORT_RUN], cwd=digits_workspace)
    assert_trained(result, work_dir)
    tested = run_cli([sys.executable, REPO_ROOT / 'tools' / 'test.py', TINY_CONFIG, work_dir / 'epoch_2.pth',
                      '--work-dir', tmp_path / 'test', '--cfg-options', f'model.head.num_classes={SUBSET}',
                      'test_dataloader.dataset.train.indices=300'], cwd=digits_workspace)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert re.search(r'knn/top1: \d+\.\d+', tested.stdout + tested.stderr)


@pytest.mark.parametrize('package', ['mmpretrain', 'mmselfsup'])
def test_mim_train(package, digits_workspace, tmp_path):
    work_dir = tmp_path / 'work'
    result = run_cli([bin_path('mim'), 'train', package, TINY_CONFIG, '--work-dir', work_dir, *SHORT_RUN],
                     cwd=digits_workspace)
    assert_trained(result, work_dir)


def test_head_size_different_from_the_data_set_stops_before_training(digits_workspace, tmp_path):
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', TINY_CONFIG, '--work-dir', tmp_path,
                      '--cfg-options', f'train_dataloader.dataset.indices={SUBSET}', 'model.head.num_classes=1500'],
                     cwd=digits_workspace)
    assert result.returncode != 0
    assert ('InstanceClsHead has num_classes=1500 rows but the training set has 256 images: '
            'set model.head.num_classes=256') in result.stderr
    assert not list(tmp_path.rglob('*.pth'))


def test_a_truncated_image_stops_training_and_names_the_file(digits_workspace, tmp_path):
    shutil.copytree(digits_workspace / 'data', tmp_path / 'data')
    broken = sorted((tmp_path / 'data' / 'digits' / 'train').rglob('*.png'))[0]  # among the first training images
    broken.write_bytes(broken.read_bytes()[:40])  # cut off mid-header, as an interrupted copy leaves it
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', TINY_CONFIG, '--work-dir', tmp_path / 'work',
                      '--cfg-options', 'train_dataloader.dataset.indices=64', 'model.head.num_classes=64',
                      'train_dataloader.batch_size=32'], cwd=tmp_path)  # fails in the first epoch
    assert result.returncode != 0
    assert f'failed to load image: data/digits/train/{broken.relative_to(tmp_path / "data" / "digits" / "train")}' \
        in result.stderr, result.stderr[-3000:]
    assert not list((tmp_path / 'work').rglob('*.pth'))


def test_tools_train_refuses_a_config_without_custom_imports(digits_workspace, tmp_path):
    config = tmp_path / 'forgot_imports.py'
    config.write_text(f"_base_ = ['{TINY_CONFIG}']\ncustom_imports = None\n")
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', tmp_path],
                     cwd=digits_workspace)
    assert result.returncode != 0
    assert "does not import it: add `custom_imports = dict(imports=['pic_plugin']" in result.stderr


def test_demo_prints_random_and_trained_knn(digits_workspace, tmp_path):
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'demo.py', '--work-dir', tmp_path, '--config',
                      TINY_CONFIG, '--cfg-options', 'train_cfg.max_epochs=1'], cwd=digits_workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'random init: +\d+\.\d+%\n +pre-trained: +\d+\.\d+%', result.stdout), result.stdout[-2000:]
