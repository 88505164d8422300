"""ShardedTableHook gathers every shard exactly before the saves that CheckpointHook will make."""
from types import SimpleNamespace

import pytest
from mmengine.hooks import CheckpointHook
from torch import nn

from distributed import run_distributed

from pic_plugin.engine.hooks import ShardedTableHook
from pic_plugin.models.utils import RowTable


def gathered_after(rank, world_size, checkpoint_kwargs, max_iters):
    """Run the hook over ``max_iters`` iterations; return the iterations (1-based) after which rank 0 held all rows."""
    table = RowTable(10, 2, sharded=True)
    runner = SimpleNamespace(hooks=[CheckpointHook(**checkpoint_kwargs)], model=nn.Sequential(table), iter=0,
                             max_iters=max_iters)
    hook = ShardedTableHook()
    hook.before_train(runner)
    gathered = []
    for runner.iter in range(max_iters):
        table.gathered = None  # a training step writes rows, which drops the last gathered copy
        hook.after_train_iter(runner, batch_idx=runner.iter)
        if table.gathered is not None:
            assert table.gathered['weight'].shape == (10, 2)
            gathered.append(runner.iter + 1)
    return gathered


@pytest.mark.parametrize('kwargs, expected', [
    (dict(by_epoch=False, interval=3), [3, 6, 7]),  # every third iteration, and the last one (save_last)
    (dict(by_epoch=False, interval=3, save_last=False, save_begin=4), [4, 7]),
    (dict(by_epoch=True, interval=1), []),  # epoch-based saves gather after the epoch instead
])
def test_iteration_based_checkpoints_get_the_whole_table(kwargs, expected):
    assert run_distributed(gathered_after, 2, kwargs, 7) == [expected, []]  # only rank 0 keeps the gathered rows
