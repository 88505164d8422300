"""Stop training at the first non-finite loss, before a poisoned checkpoint can be written."""
import math
import os.path as osp
from typing import Optional

from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class NaNGuardHook(Hook):
    """Raise ``FloatingPointError`` when a training loss is NaN or infinite.

    It runs after every iteration, before the checkpoint hook's end-of-epoch save, so the newest checkpoint on
    disk is still a good one; the error names the iteration and that checkpoint to resume from (the PIC release
    notes NaN losses in long runs).
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs: Optional[dict] = None) -> None:
        loss = (outputs or {}).get('loss')
        if loss is None:
            return
        summed = loss.detach().clone().float()
        all_reduce(summed)  # non-finite on every rank if it is on one: all stop together, none waits
        if math.isfinite(float(summed)):
            return
        loss = float(loss.detach())
        last = osp.join(runner.work_dir, 'last_checkpoint')
        checkpoint = open(last).read().strip() if osp.isfile(last) else None
        advice = (f'the last good checkpoint is {checkpoint}: resume from it with --resume {checkpoint}'
                  if checkpoint else 'no checkpoint was saved yet')
        raise FloatingPointError(f'loss is {loss} on this rank (non-finite on at least one rank) at iteration '
                                 f'{runner.iter + 1} (epoch {runner.epoch + 1}); training stopped before saving it, '
                                 f'and {advice}, e.g. with a lower lr.')
