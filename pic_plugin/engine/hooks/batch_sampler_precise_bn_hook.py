"""mmpretrain's precise BatchNorm statistics for data loaders that batch through a batch sampler."""
import copy
from typing import Iterator

from mmpretrain.engine.hooks import PreciseBNHook
from mmpretrain.engine.hooks.precise_bn_hook import update_bn_stats
from mmpretrain.registry import HOOKS
from torch.utils.data import DataLoader

from .utils import loader_batch_size


class _BatchSamplerLoader:
    """A data loader that reports the batch size of its batch sampler (``DataLoader.batch_size`` is None then)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.batch_size = loader_batch_size(loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        return iter(self.loader)


@HOOKS.register_module()
class BatchSamplerPreciseBNHook(PreciseBNHook):
    """mmpretrain's ``PreciseBNHook`` for training loaders built with a ``batch_sampler`` (mmdet's).

    The precise-BN pass (Wu & Johnson, "Rethinking Batch in BatchNorm", Sec. 3; detectron2's ``TEST.PRECISE_BN``,
    which MoCo's detection protocol switches on) re-estimates every BatchNorm's statistics on training batches
    with the weights fixed. mmpretrain's hook fails on mmdet's loaders in two ways, both handled here:

    - it sizes the pass by ``loader.batch_size``, which PyTorch leaves as None when a batch sampler (mmdet's
      ``AspectRatioBatchSampler``) forms the batches: the batch sampler's size is used instead;
    - it iterates the loader that the running loop is iterating: with an iteration-based loop (an
      ``InfiniteSampler`` inside the batch sampler) that second iterator never yields a batch (found in
      ``tests/benchmarks/test_downstream_with_mim.py``): the pass reads a fresh loader built from the
      config's ``train_dataloader`` instead.

    From an mmdet config: ``custom_hooks = [dict(type='mmpretrain.BatchSamplerPreciseBNHook', ...)]``.
    """

    def _perform_precise_bn(self, runner) -> None:
        runner.logger.info(f'Running Precise BN for {self.num_samples} samples...')
        loader = runner.build_dataloader(copy.deepcopy(runner.cfg.train_dataloader), seed=runner.seed)
        update_bn_stats(runner.model, _BatchSamplerLoader(loader), self.num_samples, logger=runner.logger)
        runner.logger.info('Finish Precise BN, BN stats updated.')
