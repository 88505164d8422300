from .checked_epoch_loop import CheckedEpochBasedTrainLoop

__all__ = ['CheckedEpochBasedTrainLoop']
