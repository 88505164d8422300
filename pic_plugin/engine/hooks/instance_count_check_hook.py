"""Give the instance classifier one row per training image: size a head built with ``num_classes='auto'``, check
any other before the first step."""
from mmengine.hooks import Hook
from mmengine.runner import BaseLoop
from mmpretrain.registry import HOOKS

from .utils import compute_device, unwrapped_model


@HOOKS.register_module()
class InstanceCountCheckHook(Hook):
    """Makes the head keep exactly one row per training image.

    Instance classification labels an image by its index in the training set, so a head with fewer rows fails
    on the first image beyond them, and a head with more rows silently trains classes that no image has.

    A head built with ``num_classes='auto'`` (``InstanceClsHead``, ``MemoryBankNCE``) has no rows yet; at
    ``before_run`` of a training run this hook allocates them for the training set's size and logs that size.
    That is after the runner has built the training data loader and before it loads or resumes a checkpoint
    (which holds the rows) or runs the first step. A head with an explicit ``num_classes`` of another size than
    the training set stops the run before training starts, with the size to set.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = unwrapped_model(runner)
        head = getattr(model, 'head', None)
        # train() builds its loop before calling before_run; val() and test() leave it unbuilt and need no rows
        if (not hasattr(head, 'allocate_rows') or head.num_classes is not None
                or not isinstance(runner._train_loop, BaseLoop)):
            return
        num_images = len(runner.train_dataloader.dataset)
        device = compute_device(model, head)  # where the runner put the model
        head.allocate_rows(num_images)
        head.to(device)  # its new buffers (the hard classes) too; the rows place themselves (RowStorage.place_on)
        runner.logger.info(f"InstanceCountCheckHook: {num_images} training images, so {type(head).__name__} "
                           f"(num_classes='auto') gets {num_images} rows (model.head.num_classes={num_images} "
                           'pins this size).')

    def before_train(self, runner) -> None:
        head = getattr(unwrapped_model(runner), 'head', None)
        num_rows = getattr(head, 'num_classes', None)
        num_images = len(runner.train_dataloader.dataset)
        if num_rows is not None and num_rows != num_images:
            raise ValueError(
                f'{type(head).__name__} has num_classes={num_rows} rows but the training set has {num_images} '
                f'images: set model.head.num_classes={num_images} in the config (one class per image), or '
                "num_classes='auto' to follow the training set.")
