from .instance_count_check_hook import InstanceCountCheckHook

__all__ = ['InstanceCountCheckHook']
