"""Resuming reproduces the uninterrupted run exactly, in every loader setting and through every entry point; a
SIGKILL mid-epoch loses nothing; a NaN loss never reaches a checkpoint.

Each method runs with everything that carries state across steps switched on. PIC: the sliding-window sampler,
recent negatives (a FIFO buffer), LazyCorrectedSGD (rows, momentum, last-update steps, per-step transitions) and
the lr schedule. NPID: the memory bank, NCE's normaliser Z and its noise draws. The augmentation draws random crops
and colour jitter for every visit (SeededByVisit with the sampler's VisitKey).

The reference is one uninterrupted run of two epochs per method (``tools/train.py``, loader in the training
process). Every case trains one epoch, stops, and resumes for the second in a new process, with one loader setting
and one entry point; its checkpoints after each epoch must equal the reference's in every weight, buffer and
optimiser tensor. ``persistent_workers=True`` needs workers, so the loader settings are three.
"""
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from conftest import REPO_ROOT, assert_same_checkpoint, bin_path, cli_env, load_checkpoint, run_cli

NO_VALIDATION = ['default_hooks.checkpoint.interval=1', 'train_cfg.val_begin=100']
METHODS = {
    # 256 images, 4 steps of 64 per epoch; 64 recent negatives, so rows are skipped and caught up later
    'pic': (REPO_ROOT / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-sw-recent-coslr-20e_digits.py',
            ['train_dataloader.dataset.indices=256', 'model.head.num_classes=256', 'train_dataloader.batch_size=64',
             'train_dataloader.sampler.window_size=128', 'train_dataloader.sampler.stride=16',
             'model.head.num_negatives=64', *NO_VALIDATION]),
    # 160 images, 5 steps of 32 per epoch, NCE with 64 noise samples
    'npid': (REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18-w16_1xb128-coslr-20e_digits.py',
             ['train_dataloader.dataset.indices=160', 'model.head.num_classes=160', 'train_dataloader.batch_size=32',
              'model.head.loss=nce', 'model.head.num_noise=64', *NO_VALIDATION]),
}
STEPS_PER_EPOCH = {'pic': 4, 'npid': 5}
LOADERS = {
    'in-process': ['train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'],
    'workers': ['train_dataloader.num_workers=2', 'train_dataloader.persistent_workers=False'],
    'persistent-workers': ['train_dataloader.num_workers=2', 'train_dataloader.persistent_workers=True'],
}
ENTRY_POINTS = {
    'tools-train': [sys.executable, str(REPO_ROOT / 'tools' / 'train.py')],
    'mim-mmpretrain': [bin_path('mim'), 'train', 'mmpretrain'],
    'mim-mmselfsup': [bin_path('mim'), 'train', 'mmselfsup'],
}
# PIC: every loader setting through every entry point; NPID: every loader setting through tools/train.py, and
# each `mim` entry point once
CASES = ([('pic', entry, loader) for entry in ENTRY_POINTS for loader in LOADERS]
         + [('npid', 'tools-train', loader) for loader in LOADERS]
         + [('npid', 'mim-mmpretrain', 'in-process'), ('npid', 'mim-mmselfsup', 'persistent-workers')])


def train_command(method: str, work_dir: Path, epochs: int, *extra: str, entry: str = 'tools-train',
                  loader: str = 'in-process') -> List[str]:
    config, options = METHODS[method]
    return [*ENTRY_POINTS[entry], str(config), '--work-dir', str(work_dir), *extra, '--cfg-options', *options,
            *LOADERS[loader], f'train_cfg.max_epochs={epochs}']


@pytest.fixture(scope='module')
def uninterrupted(digits_workspace, tmp_path_factory):
    """``method -> work dir`` of the reference run (two epochs), trained on first use."""
    runs = {}

    def run(method: str) -> Path:
        if method not in runs:
            work_dir = tmp_path_factory.mktemp(f'{method}-uninterrupted')
            result = run_cli(train_command(method, work_dir, 2), cwd=digits_workspace)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[method] = work_dir
        return runs[method]
    return run


@pytest.mark.parametrize('method, entry, loader', CASES, ids=['-'.join(case) for case in CASES])
def test_resume_equals_the_uninterrupted_run(method, entry, loader, uninterrupted, digits_workspace, tmp_path):
    reference = uninterrupted(method)
    first = run_cli(train_command(method, tmp_path, 1, entry=entry, loader=loader), cwd=digits_workspace)
    assert first.returncode == 0, first.stderr[-3000:]
    assert_same_checkpoint(reference / 'epoch_1.pth', tmp_path / 'epoch_1.pth')  # a fresh start in this setting
    second = run_cli(train_command(method, tmp_path, 2, '--resume', entry=entry, loader=loader), cwd=digits_workspace)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f'resumed epoch: 1, iter: {STEPS_PER_EPOCH[method]}' in second.stdout + second.stderr
    assert_same_checkpoint(reference / 'epoch_2.pth', tmp_path / 'epoch_2.pth')


def test_the_reference_runs_exercise_the_state_they_carry(uninterrupted):
    pic = load_checkpoint(uninterrupted('pic') / 'epoch_2.pth')['state_dict']
    last_step = pic['head.rows.last_step']  # rows skipped for a while and caught up later (0 < last < final step)
    assert int(last_step.max()) == 8 and ((last_step > 0) & (last_step < 8)).any()
    npid = load_checkpoint(uninterrupted('npid') / 'epoch_2.pth')['state_dict']
    assert int(npid['head.num_steps']) == 10 and float(npid['head.normaliser']) > 0  # Z estimated, carried over


def test_a_run_killed_mid_epoch_with_persistent_workers_resumes_to_the_uninterrupted_result(
        uninterrupted, digits_workspace, tmp_path):
    command = train_command('pic', tmp_path, 2, loader='persistent-workers')
    process = subprocess.Popen(command, cwd=digits_workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=cli_env())
    deadline = time.time() + 400
    while not (tmp_path / 'last_checkpoint').exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)  # in epoch 2: no chance to clean up, its workers orphaned
    process.wait()
    assert not (tmp_path / 'epoch_2.pth').exists(), 'the run finished before the kill'
    load_checkpoint((tmp_path / 'last_checkpoint').read_text().strip())  # what resume will use is complete
    # the killed run's own first epoch: where it differs, the two runs did not compute alike, before any resume
    assert_same_checkpoint(uninterrupted('pic') / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    resumed = run_cli(train_command('pic', tmp_path, 2, '--resume', loader='persistent-workers'),
                      cwd=digits_workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 4' in resumed.stdout + resumed.stderr
    assert_same_checkpoint(uninterrupted('pic') / 'epoch_2.pth', tmp_path / 'epoch_2.pth')


def test_nan_loss_stops_before_a_checkpoint_is_written(digits_workspace, tmp_path):
    # an absurd learning rate makes the rows overflow within the first epochs
    result = run_cli(train_command('pic', tmp_path, 3) + ['optim_wrapper.optimizer.lr=1e30'], cwd=digits_workspace)
    assert result.returncode != 0
    assert re.search(r'FloatingPointError: loss is (nan|inf) on this rank \(non-finite on at least one rank\) at '
                     r'iteration \d+', result.stderr), result.stderr[-3000:]
    assert not list(tmp_path.glob('epoch_*.pth'))
