from .knn_splits import KNNSplits
from .samplers import SlidingWindowSampler

__all__ = ['KNNSplits', 'SlidingWindowSampler']
