"""Make the checkpoints of a sharded run hold every rank's rows."""
from typing import Dict, Optional

from mmengine.dist import get_rank
from mmengine.hooks import CheckpointHook, Hook
from mmpretrain.registry import HOOKS
from torch import Tensor

from pic_plugin.models.utils.gather import gather_rows_to_rank0
from pic_plugin.models.utils.row_storage import RowStorage, shard_sizes
from pic_plugin.utils.progress import PassProgress
from .utils import unwrapped_model


@HOOKS.register_module()
class ShardedTableHook(Hook):
    """Gather the shards of every sharded :class:`RowStorage` to rank 0 when a checkpoint is about to be saved.

    A sharded table is not in the model's ``state_dict`` (no rank holds it whole), and mmengine saves checkpoints
    from rank 0 alone, so without this hook a sharded classifier (the full classifier's hybrid parallelism) would
    save none of its rows. With it, the checkpoint holds the whole table: it resumes on any number of ranks (each
    rank loads its slice) and exports as one file. The gather is a collective, so it cannot happen inside the save
    (rank 0 only): every rank takes part just before ``CheckpointHook`` (lower priority) saves, and only then:
    after an epoch or iteration that its ``interval``, ``save_begin`` and ``save_last`` make a saving one, and
    after a validation whose metrics beat the best score so far (``save_best``: mmengine then saves the best
    checkpoint, and the latest one again). Each rank's rows stream to rank 0's host memory a chunk at a time
    (:func:`~pic_plugin.models.utils.gather.gather_rows_to_rank0`); rank 0 puts them into the ``state_dict`` of
    every checkpoint saved in the same phase (``before_save_checkpoint``) and forgets them when the next training
    iteration or validation starts. Tables that are not sharded are left alone. Rank 0 shows the gather's
    progress and logs its duration.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self) -> None:
        self.checkpoint_hook: Optional[CheckpointHook] = None
        self.gathered: Dict[str, Tensor] = {}

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
        hook = self.checkpoint_hook
        if hook is None or not hook.by_epoch:
            return
        if self.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                hook.save_last and self.is_last_train_epoch(runner)):
            self._gather(runner)

    def before_val_epoch(self, runner) -> None:
        self._forget()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.checkpoint_hook is not None and saves_best(self.checkpoint_hook, runner, metrics or {}):
            self._gather(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._forget()

    def after_train(self, runner) -> None:
        self._forget()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Rank 0: replace the sharded tables' local rows in the checkpoint by the whole tables."""
        if self.gathered:
            checkpoint['state_dict'].update(self.gathered)
        elif self._sharded_tables(runner):
            runner.logger.warning('ShardedTableHook: a checkpoint is saved without a gather of the sharded rows '
                                  'before it (not on CheckpointHook\'s schedule): it holds none of their rows, and a '
                                  'run resumed from it starts them afresh.')

    def _forget(self) -> None:
        """Drop rank 0's copy of the whole tables: the saves it was gathered for are done."""
        self.gathered = {}

    @staticmethod
    def _sharded_tables(runner) -> Dict[str, RowStorage]:
        return {name: module for name, module in unwrapped_model(runner).named_modules()
                if isinstance(module, RowStorage) and module.world_size > 1}

    def _gather(self, runner) -> None:
        tables = self._sharded_tables(runner)
        if not tables:
            return
        columns = [(f'{name}.{column}', table, tensor) for name, table in tables.items()
                   for column, tensor in table.columns().items()]
        progress = PassProgress(sum(table.num_rows for _, table, _ in columns), 'sharded rows gathered for the '
                                'checkpoint', unit='rows')
        gathered = {}
        for key, table, tensor in columns:
            whole = gather_rows_to_rank0(tensor, shard_sizes(table.num_rows, table.world_size), progress.update)
            if get_rank() == 0:
                gathered[key] = whole
        progress.finish()
        self.gathered = gathered


def saves_best(hook: CheckpointHook, runner, metrics: Dict[str, float]) -> bool:
    """Whether ``hook`` saves a best checkpoint after a validation with these ``metrics``.

    mmengine's ``CheckpointHook`` saves one when a key indicator of ``save_best`` beats the best score kept in the
    message hub (``best_score``, or ``best_score_<key>`` for several keys), which starts at its rule's initial
    value (-inf for ``'greater'``, inf for ``'less'``). ``save_best='auto'`` is resolved to the first metric at
    the first validation, which always saves: nothing is best yet.
    """
    if not hook.save_best or not metrics:  # CheckpointHook skips a validation without metrics
        return False
    if 'auto' in hook.key_indicators:
        return True
    best_scores = runner.message_hub.runtime_info
    for key, rule in zip(hook.key_indicators, hook.rules):
        best_key = 'best_score' if len(hook.key_indicators) == 1 else f'best_score_{key}'
        best = best_scores[best_key] if best_key in best_scores else hook.init_value_map[rule]
        score = metrics.get(key)
        if score is not None and hook.is_better_than[key](score, best):
            return True
    return False
