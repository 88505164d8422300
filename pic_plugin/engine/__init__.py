from .hooks import (BatchSamplerPreciseBNHook, ContrastivePriorHook, EvalProgressHook, FeaturePicturesHook,
                    HardClassHook, InstanceCountCheckHook, NaNGuardHook, ShardedTableHook)
from .optimizers import AmpLazyCorrectedSGD, LazyCorrectedSGD, LazyCorrectedSGDConstructor
from .runners import CheckedEpochBasedTrainLoop, HostResumeRunner

__all__ = [
    'BatchSamplerPreciseBNHook', 'ContrastivePriorHook', 'EvalProgressHook', 'FeaturePicturesHook', 'HardClassHook',
    'InstanceCountCheckHook', 'NaNGuardHook', 'ShardedTableHook', 'AmpLazyCorrectedSGD', 'LazyCorrectedSGD',
    'LazyCorrectedSGDConstructor', 'CheckedEpochBasedTrainLoop', 'HostResumeRunner'
]
