"""mmengine's epoch-based training loop, checking the data folders before it builds the loaders."""
from typing import Union

from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import LOOPS
from torch.utils.data import DataLoader

from ...utils import check_data_roots


@LOOPS.register_module()
class CheckedEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that first checks that the training (and validation) folders hold data.

    mmengine builds the training loader in this loop's constructor, before any hook runs, so a missing or empty
    ``data_root`` would surface as mmpretrain's bare ``FileNotFoundError`` or ``RuntimeError: Found 0 files``.
    Checked here, every entry point (``tools/train.py``, ``mim train mmpretrain``, ``mim train mmselfsup``) stops
    before training with an error that names the config key, the folder and the expected layout
    (:func:`~pic_plugin.utils.check_data_roots`). The validation folders are checked when ``val_cfg`` is set.

    Example:
        >>> train_cfg = dict(type='CheckedEpochBasedTrainLoop', max_epochs=200)
    """

    def __init__(self, runner, dataloader: Union[DataLoader, dict], **kwargs) -> None:
        loaders = ['train_dataloader'] + (['val_dataloader'] if runner.cfg.get('val_cfg') is not None else [])
        check_data_roots(runner.cfg, *loaders)
        super().__init__(runner, dataloader, **kwargs)
