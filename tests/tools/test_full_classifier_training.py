"""The full classifier trains with its rows sharded over 2 gloo processes, saves the whole table, and resumes
exactly: 2 epochs straight equal 1 epoch, a restart from its checkpoint, and 1 more; and a job whose process is
killed mid-epoch is restarted by torch's elastic agent (``MAX_RESTARTS``), resumes on its own and ends where the
uninterrupted job ends.

The run has the contrastive prior (before the first step only), hard-class smoothing (searched every epoch) and
the sharded table with its momentum, so a resume that lost or misplaced any of them would differ.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, assert_same_checkpoint, cli_env, load_checkpoint, run_cli
from distributed import free_port

CONFIG = REPO_ROOT / 'configs' / 'full_classifier' / 'fullcls_resnet18-w16_2xb64-coslr-20e_digits.py'
SUBSET = 320  # 2 processes x 32 images: 5 iterations per epoch
OPTIONS = ['--cfg-options', f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}',
           'train_dataloader.batch_size=32', 'default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=100',
           'train_cfg.max_epochs=2']


def dist_train_command(work_dir, *extra):
    return ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(CONFIG), '2', '--work-dir', str(work_dir),
            *map(str, extra), *OPTIONS]


def dist_train(work_dir, *extra, cwd):
    return run_cli(dist_train_command(work_dir, *extra), cwd=cwd, PYTHON=sys.executable, PORT=str(free_port()))


@pytest.fixture(scope='module')
def straight(digits_workspace, tmp_path_factory) -> Path:
    """The work dir of the uninterrupted 2-process job of two epochs."""
    work_dir = tmp_path_factory.mktemp('straight')
    result = dist_train(work_dir, cwd=digits_workspace)
    assert result.returncode == 0, result.stderr[-4000:]
    return work_dir


def test_two_process_full_classifier_saves_the_whole_table_and_resumes_exactly(straight, digits_workspace, tmp_path):
    first_epoch = load_checkpoint(straight / 'epoch_1.pth')
    table = first_epoch['state_dict']['head.rows.weight']
    assert table.shape == (SUBSET, 128)  # both ranks' shards, gathered by ShardedTableHook
    # the contrastive prior wrote unit-scale projections into every row before training moved them
    assert (table.norm(dim=1) > 0.5).all()

    shutil.copy(straight / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    resumed = dist_train(tmp_path, '--resume', tmp_path / 'epoch_1.pth', cwd=digits_workspace)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1, iter: 5' in log
    assert 'the classifier rows come from the checkpoint' in log  # the contrastive prior is not applied again
    assert assert_same_checkpoint(straight / 'epoch_2.pth', tmp_path / 'epoch_2.pth')['meta']['iter'] == 10


def rank_processes(root: int) -> dict:
    """``{local rank: pid}`` of the training processes that torch's launcher started under process ``root``."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f'/proc/{entry}/stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError):
                continue  # gone meanwhile
    ranks = {}
    for pid, parent in parents.items():
        try:
            if b'torch.distributed.run' not in Path(f'/proc/{parent}/cmdline').read_bytes():
                continue
            ancestor = parent
            while ancestor not in (root, 0, 1):
                ancestor = parents.get(ancestor, 0)
            environment = dict(item.split(b'=', 1) for item in Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
                               if b'=' in item)
        except OSError:
            continue
        if ancestor == root:
            ranks[int(environment[b'LOCAL_RANK'])] = pid
    return ranks


def test_a_killed_process_is_restarted_and_the_job_ends_as_the_uninterrupted_one(
        straight, digits_workspace, tmp_path):
    job = subprocess.Popen(dist_train_command(tmp_path, '--resume'), cwd=digits_workspace, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           env=cli_env(PYTHON=sys.executable, PORT=str(free_port()), MAX_RESTARTS='1'))
    deadline = time.time() + 600
    while not (tmp_path / 'last_checkpoint').exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    ranks = rank_processes(job.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)  # rank 1 dies in epoch 2; rank 0 is left waiting in a collective
    log, _ = job.communicate(timeout=900)
    assert job.returncode == 0, log[-4000:]
    assert 'resumed epoch: 1, iter: 5' in log, log[-4000:]  # the restarted ranks found the last checkpoint
    # the killed job's own first epoch: where it differs, the two jobs did not compute alike, before any restart
    assert_same_checkpoint(straight / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    assert assert_same_checkpoint(straight / 'epoch_2.pth', tmp_path / 'epoch_2.pth')['meta']['iter'] == 10
