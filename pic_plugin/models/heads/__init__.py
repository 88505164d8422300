from .instance_cls_head import InstanceClsHead
from .memory_bank_nce_head import MemoryBankNCE

__all__ = ['InstanceClsHead', 'MemoryBankNCE']
