"""torch.compile (mmengine's ``compile=True``) and the channels-last memory format train the PIC digits config
(sliding window, recent negatives, lazy rows) with the eager run's losses.

Tolerances: compiled kernels (inductor) and channels-last convolutions sum in other orders than the eager
contiguous ones, so float32 results differ by rounding, and training amplifies the differences step by step.
Over the 4 steps run here the losses agree within 1e-3 relative (measured: the compiled run equals the eager
one to the printed 4 decimals). The heads run eagerly under compile (``torch.compiler.disable``): their row
gathers, ``unique`` and FIFO have data-dependent shapes, so nothing may recompile from step to step.
"""
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from conftest import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-sw-recent-coslr-20e_digits.py'
SUBSET = 256
OPTIONS = dict(train_dataloader=dict(dataset=dict(indices=SUBSET), num_workers=0,
                                     sampler=dict(window_size=128, stride=64)),
               model=dict(head=dict(num_classes=SUBSET, num_negatives=64)),
               train_cfg=dict(max_epochs=2, val_interval=100), val_cfg=None, val_dataloader=None, val_evaluator=None)


class LossRecorder(Hook):
    """The loss of every training iteration, the number of frames torch.compile compiled so far, and whether the
    backbone's input images and its stem convolution's weight were channels-last in each iteration."""

    def __init__(self, watch_memory_format: bool) -> None:
        self.losses, self.compiled_frames, self.channels_last = [], [], []
        self.watch_memory_format = watch_memory_format  # a hook in a compiled module would recompile it

    def before_train(self, runner) -> None:
        if not self.watch_memory_format:
            return
        backbone = runner.model.backbone
        backbone.register_forward_pre_hook(lambda module, args: self.channels_last.append(
            (is_channels_last(args[0]), is_channels_last(backbone.conv1.weight))))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(float(outputs['loss'].detach()))
        self.compiled_frames.append(torch._dynamo.utils.counters['stats']['unique_graphs'])


def is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def train(work_dir: Path, workspace: Path, **overrides) -> LossRecorder:
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(OPTIONS)
    cfg.merge_from_dict(overrides)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint = None
    recorder = LossRecorder(watch_memory_format=not overrides.get('compile'))
    cwd = os.getcwd()
    os.chdir(workspace)  # the config's data_root is relative
    try:
        runner = Runner.from_cfg(cfg)
        runner.register_hook(recorder)
        runner.train()
    finally:
        os.chdir(cwd)
        torch._dynamo.reset()
    return recorder


@pytest.fixture(scope='module')
def eager(digits_workspace, tmp_path_factory) -> LossRecorder:
    return train(tmp_path_factory.mktemp('eager'), digits_workspace)


def test_channels_last_trains_with_the_eager_losses(eager, digits_workspace, tmp_path):
    channels_last = train(tmp_path, digits_workspace, model=dict(channels_last=True))
    assert len(channels_last.losses) == len(eager.losses) == 4
    assert channels_last.losses == pytest.approx(eager.losses, rel=1e-3)
    assert channels_last.channels_last == [(True, True)] * 4 and eager.channels_last == [(False, False)] * 4


def test_torch_compile_trains_with_the_eager_losses_and_compiles_once(eager, digits_workspace, tmp_path):
    torch._dynamo.utils.counters.clear()
    compiled = train(tmp_path, digits_workspace, compile=True)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-3)
    # graphs are compiled in the first step; the recent negatives' varying shapes never cause a recompile
    assert compiled.compiled_frames[0] > 0 and compiled.compiled_frames[-1] == compiled.compiled_frames[0]
