"""Resuming reproduces the uninterrupted run exactly, survives a SIGKILL, and a NaN loss never reaches a checkpoint.

The run has everything that carries state across steps switched on: the sliding-window sampler, recent negatives
(a FIFO buffer), LazyCorrectedSGD (rows, momentum, last-update steps, per-step transitions) and the lr schedule.
"""
import os
import re
import signal
import subprocess
import sys
import time

from conftest import REPO_ROOT, assert_same_training_state, load_checkpoint, run_cli

CONFIG = REPO_ROOT / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-sw-recent-coslr-20e_digits.py'
SUBSET = 256  # 4 iterations of 64 per epoch
OPTIONS = [f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}',
           'train_dataloader.batch_size=64', 'train_dataloader.sampler.window_size=128',
           'train_dataloader.sampler.stride=16', 'model.head.num_negatives=64', 'default_hooks.checkpoint.interval=1',
           'train_cfg.val_interval=100']


def train(work_dir, epochs, *extra, cwd):
    return run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', CONFIG, '--work-dir', work_dir, *extra,
                    '--cfg-options', *OPTIONS, f'train_cfg.max_epochs={epochs}'], cwd=cwd)


def test_resume_equals_the_uninterrupted_run(digits_workspace, tmp_path):
    straight = train(tmp_path / 'straight', 4, cwd=digits_workspace)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first_half = train(tmp_path / 'resumed', 2, cwd=digits_workspace)
    assert first_half.returncode == 0, first_half.stderr[-3000:]
    second_half = train(tmp_path / 'resumed', 4, '--resume', cwd=digits_workspace)
    assert second_half.returncode == 0, second_half.stderr[-3000:]
    assert 'resumed epoch: 2, iter: 8' in second_half.stdout + second_half.stderr
    state = load_checkpoint(tmp_path / 'straight' / 'epoch_4.pth')
    resumed = load_checkpoint(tmp_path / 'resumed' / 'epoch_4.pth')
    assert (state['meta']['epoch'], state['meta']['iter']) == (resumed['meta']['epoch'], resumed['meta']['iter'])
    for part in ('state_dict', 'optimizer'):  # state_dict: the rows with their transitions; optimizer: SGD state
        assert_same_training_state(state[part], resumed[part], part)
    # rows really were skipped for a while and caught up later (0 < last update < the final step 16)
    last_step = state['state_dict']['head.rows.last_step']
    assert int(last_step.max()) == 16 and ((last_step > 0) & (last_step < 16)).any()


def test_a_killed_run_resumes_from_its_last_complete_checkpoint(digits_workspace, tmp_path):
    work_dir = tmp_path / 'killed'
    command = [sys.executable, REPO_ROOT / 'tools' / 'train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
               *OPTIONS, 'train_cfg.max_epochs=6']
    process = subprocess.Popen([str(c) for c in command], cwd=digits_workspace, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    deadline = time.time() + 400
    while not (work_dir / 'epoch_2.pth').exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # mid-epoch 3 (or mid-save): no chance to clean up
    process.wait()
    latest = (work_dir / 'last_checkpoint').read_text().strip()
    load_checkpoint(latest)  # the checkpoint that resume will use is complete
    resumed = train(work_dir, 6, '--resume', cwd=digits_workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (work_dir / 'epoch_6.pth').is_file()


def test_nan_loss_stops_before_a_checkpoint_is_written(digits_workspace, tmp_path):
    # an absurd learning rate makes the rows overflow within the first epochs
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', CONFIG, '--work-dir', tmp_path,
                      '--cfg-options', *OPTIONS, 'train_cfg.max_epochs=3', 'optim_wrapper.optimizer.lr=1e30'],
                     cwd=digits_workspace)
    assert result.returncode != 0
    assert re.search(r'FloatingPointError: loss is (nan|inf) on this rank \(non-finite on at least one rank\) at '
                     r'iteration \d+', result.stderr), result.stderr[-3000:]
    assert not list(tmp_path.glob('epoch_*.pth'))
