from .instance_count_check_hook import InstanceCountCheckHook
from .nan_guard_hook import NaNGuardHook

__all__ = ['InstanceCountCheckHook', 'NaNGuardHook']
