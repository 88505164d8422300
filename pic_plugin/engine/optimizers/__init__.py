from .lazy_corrected_sgd import LazyCorrectedSGD, TransitionProducts

__all__ = ['LazyCorrectedSGD', 'TransitionProducts']
