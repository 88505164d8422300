from .hard_classes import SimilarRows, top_k_similar_rows
from .row_table import RowBatch, RowTable, first_occurrences, shard_sizes

__all__ = ['RowBatch', 'RowTable', 'SimilarRows', 'first_occurrences', 'shard_sizes', 'top_k_similar_rows']
