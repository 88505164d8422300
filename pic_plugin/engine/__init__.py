from .hooks import (ContrastivePriorHook, HardClassHook, InstanceCountCheckHook, NaNGuardHook,
                    ShardedTableHook)
from .optimizers import LazyCorrectedSGD, TransitionProducts

__all__ = [
    'ContrastivePriorHook', 'HardClassHook', 'InstanceCountCheckHook', 'NaNGuardHook', 'ShardedTableHook',
    'LazyCorrectedSGD', 'TransitionProducts'
]
