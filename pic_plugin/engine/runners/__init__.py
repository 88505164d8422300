from .checked_epoch_loop import CheckedEpochBasedTrainLoop
from .host_resume_runner import HostResumeRunner

__all__ = ['CheckedEpochBasedTrainLoop', 'HostResumeRunner']
