from .config_check import check_custom_imports
from .safe_checkpoint import allow_mmengine_checkpoints

__all__ = ['allow_mmengine_checkpoints', 'check_custom_imports']
