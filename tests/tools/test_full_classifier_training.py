"""The full classifier trains with its rows sharded over 2 gloo processes, saves the whole table, and resumes
exactly: 2 epochs straight equal 1 epoch, a restart from its checkpoint, and 1 more.

The run has the contrastive prior (before the first step only), hard-class smoothing (searched every epoch) and
the sharded table with its momentum, so a resume that lost or misplaced any of them would differ.
"""
import shutil
import sys

from conftest import REPO_ROOT, assert_same_training_state, load_checkpoint, run_cli
from distributed import free_port

CONFIG = REPO_ROOT / 'configs' / 'full_classifier' / 'fullcls_resnet18-w16_2xb64-coslr-20e_digits.py'
SUBSET = 320  # 2 processes x 32 images: 5 iterations per epoch
OPTIONS = ['--cfg-options', f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}',
           'train_dataloader.batch_size=32', 'default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=100',
           'train_cfg.max_epochs=2']


def dist_train(work_dir, *extra, cwd):
    return run_cli(['bash', REPO_ROOT / 'tools' / 'dist_train.sh', CONFIG, '2', '--work-dir', work_dir, *extra,
                    *OPTIONS], cwd=cwd, PYTHON=sys.executable, PORT=str(free_port()))


def test_two_process_full_classifier_saves_the_whole_table_and_resumes_exactly(digits_workspace, tmp_path):
    straight = dist_train(tmp_path / 'straight', cwd=digits_workspace)
    assert straight.returncode == 0, straight.stderr[-4000:]
    first_epoch = load_checkpoint(tmp_path / 'straight' / 'epoch_1.pth')
    table = first_epoch['state_dict']['head.rows.weight']
    assert table.shape == (SUBSET, 128)  # both ranks' shards, gathered by ShardedTableHook
    # the contrastive prior wrote unit-scale projections into every row before training moved them
    assert (table.norm(dim=1) > 0.5).all()

    (tmp_path / 'resumed').mkdir()
    shutil.copy(tmp_path / 'straight' / 'epoch_1.pth', tmp_path / 'resumed' / 'epoch_1.pth')
    resumed = dist_train(tmp_path / 'resumed', '--resume', tmp_path / 'resumed' / 'epoch_1.pth', cwd=digits_workspace)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1, iter: 5' in log
    assert 'the classifier rows come from the checkpoint' in log  # the contrastive prior is not applied again

    expected = load_checkpoint(tmp_path / 'straight' / 'epoch_2.pth')
    got = load_checkpoint(tmp_path / 'resumed' / 'epoch_2.pth')
    assert got['meta']['iter'] == expected['meta']['iter'] == 10
    for part in ('state_dict', 'optimizer'):
        assert_same_training_state(expected[part], got[part], part)
