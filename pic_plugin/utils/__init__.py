from .config_check import check_custom_imports
from .progress import PassProgress, track_progress
from .safe_checkpoint import allow_mmengine_checkpoints

__all__ = ['PassProgress', 'allow_mmengine_checkpoints', 'check_custom_imports', 'track_progress']
