from .hooks import InstanceCountCheckHook
from .optimizers import LazyCorrectedSGD, TransitionProducts

__all__ = ['InstanceCountCheckHook', 'LazyCorrectedSGD', 'TransitionProducts']
