"""Make the checkpoints of a sharded run hold every rank's rows."""
from typing import Optional

from mmengine.hooks import CheckpointHook, Hook

from mmpretrain.registry import HOOKS
from pic_plugin.models.utils.row_table import RowTable


@HOOKS.register_module()
class ShardedTableHook(Hook):
    """Gather the shards of every sharded :class:`RowTable` to rank 0 before each checkpoint is written.

    mmengine saves checkpoints from rank 0 alone, so without this a sharded classifier (the full classifier's
    hybrid parallelism) would save rank 0's rows only, and ``RowTable`` refuses such a checkpoint. With it, the
    checkpoint holds the whole table: it resumes on any number of ranks (each rank loads its slice) and exports
    as one file. The gather is a collective, so it cannot happen inside the save (rank 0 only); it runs on
    every rank just before ``CheckpointHook`` (which has a lower priority) writes: after every training epoch
    of an epoch-based checkpoint schedule (the best-checkpoint save after validation reuses it), after each
    iteration that the hook's ``interval``, ``save_begin`` and ``save_last`` make a saving one otherwise.
    Tables that are not sharded are left alone. Rank 0 shows each gather's progress and logs its duration (see
    :meth:`RowTable.gather_shards_for_checkpoint`).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self) -> None:
        self.checkpoint_hook: Optional[CheckpointHook] = None

    def before_train(self, runner) -> None:
        self.checkpoint_hook = next((hook for hook in runner.hooks if isinstance(hook, CheckpointHook)), None)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        hook = self.checkpoint_hook
        if hook is None or hook.by_epoch:
            return
        if self.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and self.is_last_train_iter(runner)):
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        if self.checkpoint_hook is None or self.checkpoint_hook.by_epoch:
            self._gather(runner)

    @staticmethod
    def _gather(runner) -> None:
        for module in runner.model.modules():
            if isinstance(module, RowTable):
                module.gather_shards_for_checkpoint()
