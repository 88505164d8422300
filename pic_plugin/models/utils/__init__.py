from .row_table import RowBatch, RowTable

__all__ = ['RowBatch', 'RowTable']
