"""The full classifier trains with its rows sharded over 2 gloo processes, saves the whole table, and resumes."""
import socket
import sys

import torch

from conftest import REPO_ROOT, run_cli

CONFIG = REPO_ROOT / 'configs' / 'full_classifier' / 'fullcls_resnet18-w16_2xb64-coslr-20e_digits.py'
SUBSET = 256
OPTIONS = ['--cfg-options', f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}',
           'default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=100']


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def dist_train(work_dir, epochs, *extra, cwd):
    return run_cli(['bash', REPO_ROOT / 'tools' / 'dist_train.sh', CONFIG, '2', '--work-dir', work_dir, *extra,
                    *OPTIONS, f'train_cfg.max_epochs={epochs}'], cwd=cwd, PYTHON=sys.executable, PORT=free_port())


def test_two_process_full_classifier_trains_saves_the_whole_table_and_resumes(digits_workspace, tmp_path):
    first = dist_train(tmp_path, 1, cwd=digits_workspace)
    assert first.returncode == 0, first.stderr[-4000:]
    import pic_plugin  # noqa: F401  (allow-lists what mmengine checkpoints hold)
    state = torch.load(tmp_path / 'epoch_1.pth')['state_dict']
    table = state['head.table.weight']
    assert table.shape == (SUBSET, 128)  # both ranks' shards, gathered by ShardedTableHook
    # the contrastive prior wrote unit-scale projections into every row before training moved them
    assert (table.norm(dim=1) > 0.5).all()
    resumed = dist_train(tmp_path, 2, '--resume', cwd=digits_workspace)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert 'resumed epoch: 1' in resumed.stdout + resumed.stderr
    assert (tmp_path / 'epoch_2.pth').is_file()
