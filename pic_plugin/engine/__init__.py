from .hooks import InstanceCountCheckHook, NaNGuardHook
from .optimizers import LazyCorrectedSGD, TransitionProducts

__all__ = ['InstanceCountCheckHook', 'NaNGuardHook', 'LazyCorrectedSGD', 'TransitionProducts']
