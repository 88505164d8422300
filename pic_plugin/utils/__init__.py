from .config_check import check_custom_imports
from .data_check import check_data_roots
from .progress import PassProgress, track_progress
from .safe_checkpoint import allow_mmengine_checkpoints

__all__ = ['PassProgress', 'allow_mmengine_checkpoints', 'check_custom_imports', 'check_data_roots', 'track_progress']
