from .gather import all_gather_rows, all_gather_rows_with_grad, gather_rows_to_rank0
from .hard_classes import SimilarRows, top_k_similar_rows
from .lazy_sgd_rows import LazySGDRows, TransitionProducts
from .negatives import AllNegatives, RecentNegatives
from .row_storage import RowStorage, first_occurrences, shard_sizes
from .targets import HardClassTargets, OneHotTargets

__all__ = [
    'AllNegatives', 'HardClassTargets', 'LazySGDRows', 'OneHotTargets', 'RecentNegatives', 'RowStorage', 'SimilarRows',
    'TransitionProducts', 'all_gather_rows', 'all_gather_rows_with_grad', 'first_occurrences', 'gather_rows_to_rank0',
    'shard_sizes', 'top_k_similar_rows'
]
