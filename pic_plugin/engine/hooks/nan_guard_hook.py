"""Stop training at the first non-finite loss, before a poisoned checkpoint can be written."""
import math
import os.path as osp
from typing import Optional

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
        loss = None if loss is None else float(loss.detach())
        if loss is None or math.isfinite(loss):
            return
        last = osp.join(runner.work_dir, 'last_checkpoint')
        checkpoint = open(last).read().strip() if osp.isfile(last) else None
        advice = (f'the last good checkpoint is {checkpoint}: resume from it with --resume {checkpoint}'
                  if checkpoint else 'no checkpoint was saved yet')
        raise FloatingPointError(f'loss is {loss} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}); '
                                 f'training stopped before saving it, and {advice}, e.g. with a lower lr.')
