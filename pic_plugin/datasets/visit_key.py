"""A dataset index that names its visit, so that the visit's random augmentation depends on nothing else."""
from typing import List, Sequence


class VisitKey(int):
    """The dataset index of one visit, carrying ``(seed, epoch, position)`` of that visit.

    A training sampler yields these instead of plain indices. Being an ``int`` (the index), a key indexes any
    dataset unchanged; it survives the trip to the loader's workers (``__reduce__``) and reaches the pipeline as
    ``results['sample_idx']``, which mmengine's ``BaseDataset.get_data_info`` sets to the index it was given.
    There :class:`~pic_plugin.datasets.transforms.SeededByVisit` seeds the augmentation from the key alone.

    ``position`` is the visit's place in the epoch's order of all ranks together (before the order is split over
    ranks), so a visit has the same key whatever the number of ranks, loader workers or restarts.

    Example:
        >>> key = VisitKey(7, seed=0, epoch=3, position=12)
        >>> key + 1, key.entropy()
        (8, [0, 3, 12, 7])
    """

    seed: int
    epoch: int
    position: int

    def __new__(cls, index: int, seed: int, epoch: int, position: int) -> 'VisitKey':
        key = super().__new__(cls, index)
        key.seed, key.epoch, key.position = int(seed), int(epoch), int(position)
        return key

    def __reduce__(self):
        return VisitKey, (int(self), self.seed, self.epoch, self.position)

    def __repr__(self) -> str:
        return f'VisitKey({int(self)}, seed={self.seed}, epoch={self.epoch}, position={self.position})'

    def entropy(self) -> List[int]:
        """``[seed, epoch, position, index]``: what seeds the visit's random streams."""
        return [self.seed, self.epoch, self.position, int(self)]


def visit_keys(indices: Sequence[int], seed: int, epoch: int, rank: int, world_size: int) -> List[VisitKey]:
    """Key one rank's share of an epoch: its ``i``-th index sits at position ``rank + i * world_size``.

    That is the split of mmengine's ``DefaultSampler`` and of ``SlidingWindowSampler``: rank ``r`` takes
    positions ``r, r + world_size, ...`` of the epoch's order.
    """
    return [VisitKey(index, seed, epoch, rank + i * world_size) for i, index in enumerate(indices)]
