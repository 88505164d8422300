from .hard_classes import SimilarRows, top_k_similar_rows
from .row_table import RowBatch, RowTable

__all__ = ['RowBatch', 'RowTable', 'SimilarRows', 'top_k_similar_rows']
