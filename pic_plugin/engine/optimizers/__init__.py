from .lazy_corrected_sgd import AmpLazyCorrectedSGD, LazyCorrectedSGD, LazyCorrectedSGDConstructor

__all__ = ['AmpLazyCorrectedSGD', 'LazyCorrectedSGD', 'LazyCorrectedSGDConstructor']
