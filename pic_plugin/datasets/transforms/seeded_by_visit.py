"""Augmentation as a function of the visit: the random draws of a training pipeline, seeded per sample visit."""
import random
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from mmcv.transforms import BaseTransform, Compose
from mmpretrain.registry import TRANSFORMS
from torch.utils.data import get_worker_info

from ..visit_key import VisitKey

SAMPLERS_WITH_KEYS = "type='KeyedDefaultSampler' (DefaultSampler's order) or type='SlidingWindowSampler'"


@contextmanager
def seeded_random_state(entropy: Sequence[int]) -> Iterator[None]:
    """Seed Python's ``random``, NumPy's global and torch's CPU generator from ``entropy``.

    The three streams get independent seeds from one ``numpy.random.SeedSequence``. In the training process
    (``num_workers=0``) the caller's states come back on exit, so the pipeline leaves the model's random stream as
    it was. In a loader worker the global streams serve the pipeline alone and every visit seeds them anew, so
    they are not saved (that would cost more than the seeding).
    """
    words = np.random.SeedSequence(list(entropy)).generate_state(4, np.uint32)
    in_worker = get_worker_info() is not None
    saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.default_generator.get_state())
    random.seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words[2])
    torch.default_generator.manual_seed(int(words[3]))
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.default_generator.set_state(saved[2])


@TRANSFORMS.register_module()
class SeededByVisit(BaseTransform):
    """Run ``transforms`` with random state seeded by the sample's visit, so a view is a pure function of it.

    The sampler names each visit by a :class:`~pic_plugin.datasets.VisitKey` ``(seed, epoch, position,
    index)``; this wrapper seeds ``random``, ``numpy`` and ``torch`` from it before the wrapped transforms draw
    (in the training process it restores the caller's state after: :func:`seeded_random_state`). Then a visit's
    view does not depend on which loader worker runs it, whether the workers persist across epochs, how many
    ranks share the epoch, or whether the run was resumed: a resumed run draws the views the uninterrupted run
    drew. Two visits of one image (two epochs,
    or two windows of ``SlidingWindowSampler``) get different views.

    ``results['sample_idx']`` leaves as the plain index. Evaluation pipelines do not use this wrapper.

    Example:
        >>> train_pipeline = [
        ...     dict(type='LoadImageFromFile'),
        ...     dict(type='SeededByVisit', transforms=[dict(type='RandomResizedCrop', scale=32)]),
        ...     dict(type='PackInputs')]
        >>> train_dataloader = dict(sampler=dict(type='KeyedDefaultSampler', shuffle=True))

    Args:
        transforms (list[dict | callable]): The random part of the training pipeline.
    """

    def __init__(self, transforms: List[Union[dict, Callable]]) -> None:
        self.transforms = Compose([TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms])

    def transform(self, results: dict) -> Optional[dict]:
        key = results.get('sample_idx')
        if not isinstance(key, VisitKey):
            raise TypeError(f'SeededByVisit got sample_idx={key!r}, a plain index without its visit: the training '
                            f'sampler must yield visit keys. Set train_dataloader.sampler to {SAMPLERS_WITH_KEYS}, '
                            'e.g. --cfg-options train_dataloader.sampler.type=KeyedDefaultSampler; a dataset '
                            'wrapper that re-indexes (ConcatDataset, RepeatDataset) drops the keys.')
        results['sample_idx'] = int(key)
        with seeded_random_state(key.entropy()):
            return self.transforms(results)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(transforms={self.transforms!r})'
