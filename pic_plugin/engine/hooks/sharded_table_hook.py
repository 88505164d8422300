"""Make the checkpoints of a sharded run hold every rank's rows."""
from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS
from pic_plugin.models.utils.row_table import RowTable


@HOOKS.register_module()
class ShardedTableHook(Hook):
    """Gather the shards of every sharded :class:`RowTable` to rank 0 before the end-of-epoch checkpoint.

    mmengine saves checkpoints from rank 0 alone, so without this a sharded classifier (the full classifier's
    hybrid parallelism) would save rank 0's rows only. With it, the checkpoint holds the whole table: it
    resumes on any number of ranks (each rank loads its slice) and exports as one file. It runs after each
    training epoch, before ``CheckpointHook`` (which has a lower priority), and does nothing for tables that
    are not sharded.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_epoch(self, runner) -> None:
        for module in runner.model.modules():
            if isinstance(module, RowTable):
                module.gather_shards_for_checkpoint()
