"""mmengine's DefaultSampler, yielding visit keys for stateless augmentation."""
from typing import Iterator

from mmengine.dataset import DefaultSampler
from mmpretrain.registry import DATA_SAMPLERS

from ..visit_key import VisitKey, visit_keys


@DATA_SAMPLERS.register_module()
class KeyedDefaultSampler(DefaultSampler):
    """``DefaultSampler``'s order, each index a :class:`~pic_plugin.datasets.VisitKey` of its visit.

    The indices are exactly mmengine's (same seed, shuffle, padding and split over ranks); each also carries
    ``(seed, epoch, position)``, from which :class:`~pic_plugin.datasets.transforms.SeededByVisit` seeds the
    augmentation of that visit. The views of an epoch are then a function of the seed and the epoch only, not of
    the loader's workers, their persistence or a resume.

    Example:
        >>> train_dataloader = dict(sampler=dict(type='KeyedDefaultSampler', shuffle=True))
    """

    def __iter__(self) -> Iterator[VisitKey]:
        indices = list(super().__iter__())
        return iter(visit_keys(indices, self.seed, self.epoch, self.rank, self.world_size))
