"""Show the progress of the validation and test loops, e.g. the kNN evaluation's feature extraction."""
from typing import Optional

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from pic_plugin.utils.progress import PassProgress


@HOOKS.register_module()
class EvalProgressHook(Hook):
    """Show a progress bar over every validation and test pass on rank 0, and log its duration when it ends.

    mmengine's ``LoggerHook`` logs every ``interval`` iterations of these loops, without a rate or an ETA. The
    weighted-kNN evaluation extracts the features of every reference and held-out image in its pass: at
    ImageNet scale (1.33M images) that takes minutes to hours. This hook shows mmengine's ``ProgressBar`` over
    the loop's iterations (images done / total, images per second, ETA) and, after the last iteration (before
    the metric is computed), logs ``val pass: N images in T s (R images/s)``. The images are those of all
    ranks: rank 0's count times the number of ranks (mmengine's ``DefaultSampler`` gives every rank as many).
    Training iterations are left to ``LoggerHook``. ``tools/knn_eval.py`` adds this hook.

    Example::

        custom_hooks = [dict(type='EvalProgressHook')]
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self.progress: Optional[PassProgress] = None

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        if mode == 'train':
            return
        loader = getattr(runner, f'{mode}_dataloader')
        self.progress = PassProgress(len(loader.sampler) * get_world_size(), f'{mode} pass')

    def _after_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None, outputs=None,
                    mode: str = 'train') -> None:
        if mode == 'train':
            return
        self.progress.update(len(data_batch['data_samples']) * get_world_size())
        if batch_idx + 1 == len(getattr(runner, f'{mode}_dataloader')):
            self.progress.finish()
