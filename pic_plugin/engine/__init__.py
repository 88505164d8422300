from .hooks import InstanceCountCheckHook, NaNGuardHook, ShardedTableHook
from .optimizers import LazyCorrectedSGD, TransitionProducts

__all__ = ['InstanceCountCheckHook', 'NaNGuardHook', 'ShardedTableHook', 'LazyCorrectedSGD', 'TransitionProducts']
