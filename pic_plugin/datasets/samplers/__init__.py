from .keyed_default_sampler import KeyedDefaultSampler
from .sliding_window_sampler import SlidingWindowSampler

__all__ = ['KeyedDefaultSampler', 'SlidingWindowSampler']
