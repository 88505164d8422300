from .hooks import (BatchSamplerPreciseBNHook, ContrastivePriorHook, EvalProgressHook, FeaturePicturesHook,
                    HardClassHook, InstanceCountCheckHook, NaNGuardHook, ShardedTableHook)
from .optimizers import LazyCorrectedSGD, TransitionProducts

__all__ = [
    'BatchSamplerPreciseBNHook', 'ContrastivePriorHook', 'EvalProgressHook', 'FeaturePicturesHook', 'HardClassHook',
    'InstanceCountCheckHook', 'NaNGuardHook', 'ShardedTableHook', 'LazyCorrectedSGD', 'TransitionProducts'
]
