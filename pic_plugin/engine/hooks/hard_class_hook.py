"""Once per epoch, find every instance's hardest classes for the full classifier's label smoothing (Eq. 2-3)."""
import time
from typing import Optional

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from torch import Tensor, nn

from mmpretrain.registry import HOOKS
from pic_plugin.engine.optimizers.lazy_corrected_sgd import LazyCorrectedSGD
from pic_plugin.models.utils.distributed_softmax import gather_with_grad
from pic_plugin.models.utils.hard_classes import top_k_similar_rows
from pic_plugin.models.utils.row_table import RowTable, shard_sizes
from .utils import compute_device, instance_head, unwrapped_model

BUFFER_NAME = 'hard_classes'


@HOOKS.register_module()
class HardClassHook(Hook):
    """Store each classifier row's ``k`` most similar rows in the head's ``hard_classes`` buffer.

    Liu et al. (Sec. 3, "Smoothing labels of hardest classes") represent instance ``i`` by its classifier row
    ``w_i``, find the ``k`` rows of highest cosine similarity to it once per epoch, and move ``alpha`` of the
    target's mass onto them (Eq. 2): ``1 - alpha`` on the instance, ``alpha / k`` on each hard class.
    ``InstanceClsHead`` (``label_smoothing=alpha``) builds that target from the buffer this hook writes: a
    ``(num_local_rows, k)`` long tensor of global row indices, -1 where not known yet.

    At ``before_train_epoch`` of every ``interval``-th epoch from ``begin_epoch`` on, the hook first brings
    every row to the current step (``LazyCorrectedSGD.bring_table_forward``: rows skipped by recent steps are
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
    begin_epoch``), resumed runs included: the buffer is not saved in checkpoints (at ImageNet scale it would
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
        self._check_buffer(head)
        start = time.perf_counter()
        if isinstance(runner.optim_wrapper, LazyCorrectedSGD) and head.table.last_step is not None:
            runner.optim_wrapper.bring_table_forward(head.table)
        self._store(head, self._search(head.table, compute_device(model, head)))
        self.searched_in_this_run = True
        runner.logger.info(f'HardClassHook: the {self.k} most similar rows of each of {head.table.num_rows} '
                           f'rows, for epoch {epoch + 1}, in {time.perf_counter() - start:.1f} s.')

    def _check_buffer(self, head: nn.Module) -> None:
        buffer = head._buffers.get(BUFFER_NAME)
        if buffer is not None and buffer.shape != (head.table.num_local_rows, self.k):
            raise ValueError(f'HardClassHook(k={self.k}) finds {self.k} hard classes per row, but the head '
                             f'keeps {buffer.shape[1]}: set k to model.head.num_hard_classes.')

    def _search(self, table: RowTable, device: torch.device) -> Tensor:
        """``(num_local_rows, k)`` global indices of the hard classes of this rank's rows."""
        rows = table.weight.to(device)  # (n, D)
        options = dict(chunk_size=self.chunk_size, key_block_size=self.key_block_size, progress=True)
        if table.world_size > 1:  # sharded: every rank searches its own rows over all shards
            return top_k_similar_rows(rows, self.k, row_offset=table.row_offset, sharded=True, **options).indices
        rank, world_size = get_dist_info()
        if world_size == 1:
            return top_k_similar_rows(rows, self.k, **options).indices
        # replicated on every rank: each searches one block of rows (as if sharded), then all blocks are shared
        block_offset = sum(shard_sizes(table.num_rows, world_size)[:rank])
        block = rows.tensor_split(world_size)[rank]  # the same split as a sharded RowTable
        found = top_k_similar_rows(block, self.k, row_offset=block_offset, sharded=True, **options)
        return gather_with_grad(found.indices)  # (N, k), in rank order

    @staticmethod
    def _store(head: nn.Module, hard_classes: Tensor) -> None:
        buffer = head._buffers.get(BUFFER_NAME)
        if buffer is not None:
            buffer.copy_(hard_classes)
        else:
            # on the model's device, where the head reads it; not in checkpoints: each run recomputes it
            head.register_buffer(BUFFER_NAME, hard_classes, persistent=False)
