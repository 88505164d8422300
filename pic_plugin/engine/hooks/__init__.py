from .instance_count_check_hook import InstanceCountCheckHook
from .nan_guard_hook import NaNGuardHook
from .sharded_table_hook import ShardedTableHook

__all__ = ['InstanceCountCheckHook', 'NaNGuardHook', 'ShardedTableHook']
