"""Mixed precision on the CPU: the bfloat16 switch trains all three methods; --amp keeps the row update or stops.

``optim_wrapper.dtype=bfloat16`` (LazyCorrectedSGD under mmengine's autocast) trains the digits configs of PIC,
the full classifier (2 gloo ranks, sharded rows) and NPID end to end. ``--amp`` (mmengine's AmpOptimWrapper:
float16 with loss scaling) needs a GPU: on the CPU every entry point stops with a message that names the
bfloat16 switch, and never trains without the row update.
"""
import argparse
import re
import sys

import pytest
import torch
from mmengine.config import Config

from conftest import REPO_ROOT, TINY_CONFIG, bin_path, load_checkpoint, run_cli
from distributed import free_port
from train import merge_args

SUBSET = 256
BF16 = 'optim_wrapper.dtype=bfloat16'
SHORT = [f'train_dataloader.dataset.indices={SUBSET}', f'model.head.num_classes={SUBSET}', 'train_cfg.max_epochs=1',
         'default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=100']
CONFIGS = {
    'pic': REPO_ROOT / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-sw-recent-coslr-20e_digits.py',
    'npid': REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18-w16_1xb128-coslr-20e_digits.py',
    'full_classifier': REPO_ROOT / 'configs' / 'full_classifier' / 'fullcls_resnet18-w16_2xb64-coslr-20e_digits.py',
}
GPU_NEEDED = 'needs a GPU. On the CPU, train in bfloat16'


def train_bf16(method: str, work_dir, cwd):
    options = ['--work-dir', work_dir, '--cfg-options', BF16, *SHORT]
    if method == 'pic':
        options += ['train_dataloader.sampler.window_size=128', 'train_dataloader.sampler.stride=64',
                    'model.head.num_negatives=64']
    if method == 'full_classifier':
        return run_cli(['bash', REPO_ROOT / 'tools' / 'dist_train.sh', CONFIGS[method], '2', *options,
                        'train_dataloader.batch_size=32'], cwd=cwd, PYTHON=sys.executable, PORT=str(free_port()))
    return run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', CONFIGS[method], *options], cwd=cwd)


@pytest.mark.parametrize('method', sorted(CONFIGS))
def test_bfloat16_switch_trains_every_method_on_the_cpu(method, digits_workspace, tmp_path):
    result = train_bf16(method, tmp_path, digits_workspace)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    losses = [float(loss) for loss in re.findall(r'Epoch\(train\) +\[1\]\[\s*\d+/\d+\].*? loss: (\d+\.\d+)', log)]
    assert losses and all(0 < loss < float('inf') for loss in losses), log[-3000:]
    state = load_checkpoint(tmp_path / 'epoch_1.pth')['state_dict']
    rows = state['head.bank.weight' if method == 'npid' else 'head.rows.weight']
    assert rows.dtype == torch.float32 and rows.shape == (SUBSET, 128) and torch.isfinite(rows).all()
    if method != 'npid':  # the rows were trained: momentum and transitions in float32 / float64, as without bf16
        assert state['head.rows.momentum'].dtype == torch.float32 and state['head.rows.momentum'].abs().sum() > 0
        assert state['head.rows.transitions'].dtype == torch.float64 and len(state['head.rows.transitions']) > 0


def test_tools_train_amp_keeps_the_row_update_and_says_what_the_cpu_needs(tmp_path):
    args = argparse.Namespace(no_validate=False, launcher='none', work_dir=str(tmp_path), amp=True, resume=None,
                              auto_scale_lr=False, cfg_options=None)
    cfg = merge_args(Config.fromfile(TINY_CONFIG), args)
    # mmpretrain's --amp sets the same; the constructor turns it into AmpLazyCorrectedSGD, which trains the rows
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.constructor == 'LazyCorrectedSGDConstructor'
    if not torch.cuda.is_available():
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import MODELS
        init_default_scope('mmpretrain')
        model = MODELS.build(cfg.model)
        with pytest.raises(RuntimeError, match=re.escape(GPU_NEEDED)):
            build_optim_wrapper(model, cfg.optim_wrapper)


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU refusal; a GPU trains with --amp')
@pytest.mark.parametrize('entry_point', ['tools/train.py', 'mim mmpretrain', 'mim mmselfsup'])
def test_amp_on_the_cpu_stops_with_the_bfloat16_switch_named(entry_point, digits_workspace, tmp_path):
    options = ['--work-dir', tmp_path, '--amp', '--cfg-options', *SHORT]
    if entry_point == 'tools/train.py':
        command = [sys.executable, REPO_ROOT / 'tools' / 'train.py', TINY_CONFIG, *options]
    else:
        command = [bin_path('mim'), 'train', entry_point.split()[1], TINY_CONFIG, *options]
    result = run_cli(command, cwd=digits_workspace)
    log = result.stdout + result.stderr
    assert result.returncode != 0 and GPU_NEEDED in log, log[-3000:]
    assert not list(tmp_path.glob('epoch_*.pth'))
