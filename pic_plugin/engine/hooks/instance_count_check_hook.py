"""Stop before the first step when the instance classifier and the training set disagree in size."""
from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS
from .utils import unwrapped_model


@HOOKS.register_module()
class InstanceCountCheckHook(Hook):
    """Checks that the head keeps exactly one row per training image.

    Instance classification labels an image by its index in the training set, so a head with fewer rows fails
    on the first image beyond them, and a head with more rows silently trains classes that no image has. This
    hook raises before training starts instead.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        head = getattr(unwrapped_model(runner), 'head', None)
        num_rows = getattr(head, 'num_classes', None)
        num_images = len(runner.train_dataloader.dataset)
        if num_rows is not None and num_rows != num_images:
            raise ValueError(
                f'{type(head).__name__} has num_classes={num_rows} rows but the training set has {num_images} '
                f'images: set model.head.num_classes={num_images} in the config (one class per image).')
