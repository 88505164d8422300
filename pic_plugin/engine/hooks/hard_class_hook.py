"""Once per epoch, find every instance's hardest classes for the full classifier's label smoothing (Eq. 2-3)."""
import time
from typing import Optional

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS
from torch import Tensor, nn

from pic_plugin.models.utils.gather import all_gather_rows
from pic_plugin.models.utils.hard_classes import top_k_similar_rows
from pic_plugin.models.utils.lazy_sgd_rows import LazySGDRows
from pic_plugin.models.utils.row_storage import shard_sizes
from .utils import compute_device, instance_head, unwrapped_model


@HOOKS.register_module()
class HardClassHook(Hook):
    """Give the head each classifier row's ``k`` most similar rows (``head.set_hard_classes``).

    Liu et al. (Sec. 3, "Smoothing labels of hardest classes") represent instance ``i`` by its classifier row
    ``w_i``, find the ``k`` rows of highest cosine similarity to it once per epoch, and move ``alpha`` of the
    target's mass onto them (Eq. 2): ``1 - alpha`` on the instance, ``alpha / k`` on each hard class.
    ``InstanceClsHead`` (``label_smoothing=alpha``) builds that target from what this hook gives it: a
    ``(num_local_rows, k)`` long tensor of global row indices.

    At ``before_train_epoch`` of every ``interval``-th epoch from ``begin_epoch`` on, the hook first brings
    every row to the current step (``LazySGDRows.bring_all_forward``: rows skipped by recent steps are
    multiplied by the weight decay and momentum they missed, so their directions are current), then runs
    :func:`~pic_plugin.models.utils.hard_classes.top_k_similar_rows` on the model's device. A sharded table
    is searched shard against shard (a collective over all ranks); a table replicated on several ranks is
    split among them and the results gathered, so no rank repeats another's work. Rank 0 shows the search's
    progress (rate, ETA) and logs its duration.

    When to start: the paper computes the top-k "once per training epoch" and does not wait for trained rows.
    With ``ContrastivePriorHook`` the rows hold the random network's features before the first step (Table 2
    uses both), so ``begin_epoch=0`` (the default) smooths towards meaningful neighbours from the start.
    Without it the rows start as Gaussian noise and epoch 0's hard classes would be random instances; set
    ``begin_epoch=1`` there.

    The hook also searches at the first epoch of every run that is due to use hard classes (``epoch >=
    begin_epoch``), resumed runs included: the hard classes are not saved in checkpoints (at ImageNet scale it would
    add 1 GB to each, and mmengine saves rank 0's copy only). Exact resume follows with the paper's
    ``interval=1``; with a longer interval a resumed run searches once more than an uninterrupted one.
    Epoch-based loops only (an iteration-based loop calls ``before_train_epoch`` once).

    Example::

        custom_hooks = [dict(type='ContrastivePriorHook'), dict(type='HardClassHook', k=100)]

    Args:
        k (int): Hard classes per instance; must equal the head's ``num_hard_classes``. Defaults to 100 (the
            paper's Table 5 best, with ``alpha = 0.2``).
        interval (int): Search every ``interval`` epochs. Defaults to 1 (the paper).
        begin_epoch (int): First epoch (0-based) that gets hard classes; earlier epochs keep one-hot targets.
            Defaults to 0.
        chunk_size (int, optional): Query rows per block of the search; None picks per device (see
            ``top_k_similar_rows``). Defaults to None.
        key_block_size (int, optional): Key rows per block of the search; None picks per device.
            Defaults to None.
    """

    priority = 'NORMAL'

    def __init__(self,
                 k: int = 100,
                 interval: int = 1,
                 begin_epoch: int = 0,
                 chunk_size: Optional[int] = None,
                 key_block_size: Optional[int] = None) -> None:
        if k <= 0 or interval <= 0 or begin_epoch < 0:
            raise ValueError(f'HardClassHook needs k > 0, interval > 0 and begin_epoch >= 0; got k={k}, '
                             f'interval={interval}, begin_epoch={begin_epoch}.')
        self.k = k
        self.interval = interval
        self.begin_epoch = begin_epoch
        self.chunk_size = chunk_size
        self.key_block_size = key_block_size
        self.searched_in_this_run = False

    def before_train_epoch(self, runner) -> None:
        epoch = runner.epoch
        if epoch < self.begin_epoch:
            return
        if self.searched_in_this_run and (epoch - self.begin_epoch) % self.interval:
            return
        model = unwrapped_model(runner)
        head = instance_head(model, type(self).__name__)
        self._check_head(head)
        start = time.perf_counter()
        head.rows.bring_all_forward()
        head.set_hard_classes(self._search(head.rows, compute_device(model, head)))
        self.searched_in_this_run = True
        runner.logger.info(f'HardClassHook: the {self.k} most similar rows of each of {head.rows.num_rows} '
                           f'rows, for epoch {epoch + 1}, in {time.perf_counter() - start:.1f} s.')

    def _check_head(self, head: nn.Module) -> None:
        if head.num_hard_classes is None:
            raise ValueError('HardClassHook finds hard classes for label smoothing, but model.head.label_smoothing '
                             'is 0: set it (the paper uses 0.2), or remove HardClassHook from custom_hooks.')
        if head.num_hard_classes != self.k:
            raise ValueError(f'HardClassHook(k={self.k}) finds {self.k} hard classes per row, but the head '
                             f'keeps {head.num_hard_classes}: set k to model.head.num_hard_classes.')

    def _search(self, rows: LazySGDRows, device: torch.device) -> Tensor:
        """``(num_local_rows, k)`` global indices of the hard classes of this rank's rows."""
        weight = rows.columns()['weight'].to(device)  # (n, D), with every write done
        options = dict(chunk_size=self.chunk_size, key_block_size=self.key_block_size, progress=True)
        if rows.world_size > 1:  # sharded: every rank searches its own rows over all shards
            return top_k_similar_rows(weight, self.k, row_offset=rows.row_offset, sharded=True, **options).indices
        rank, world_size = get_dist_info()
        if world_size == 1:
            return top_k_similar_rows(weight, self.k, **options).indices
        # replicated on every rank: each searches one block of rows (as if sharded), then all blocks are shared
        block_offset = sum(shard_sizes(rows.num_rows, world_size)[:rank])
        block = weight.tensor_split(world_size)[rank]  # the same split as sharded rows
        found = top_k_similar_rows(block, self.k, row_offset=block_offset, sharded=True, **options)
        return all_gather_rows(found.indices)  # (N, k), in rank order
