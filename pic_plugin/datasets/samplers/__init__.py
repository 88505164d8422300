from .sliding_window_sampler import SlidingWindowSampler

__all__ = ['SlidingWindowSampler']
