"""The sliding window data scheduler of PIC (Cao et al., 2020, section 2.2)."""
import math
from typing import Iterator, Optional, Sized

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from mmpretrain.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from ..visit_key import VisitKey, visit_keys

# Separate stream tags keep the pass permutations and the window shuffles independent.
PASS_PERMUTATION_TAG = 0
WINDOW_SHUFFLE_TAG = 1


@DATA_SAMPLERS.register_module()
class SlidingWindowSampler(Sampler):
    """Sliding window data scheduler of PIC, section 2.2 and figure 2.

    An epoch-based scheduler visits each instance once per epoch, so two visits of one instance
    lie N samples apart on average (Proposition 1). The sliding window scheduler keeps that
    distance short for most instances instead:

    * **Stream.** Seeded random permutations of ``range(N)`` are laid end to end, one per pass;
      pass ``p`` is drawn from a generator seeded by ``(seed, p)``.
    * **Windows.** Window ``k`` covers stream positions ``[k * S, k * S + W)``. The output
      sequence is window 0's ``W`` instances in a fresh shuffle (seeded by ``(seed, k)``), then
      window 1's, and so on. A window that spans two passes takes positions from both
      permutations.

    Consecutive windows share ``W - S`` instances, so an instance is visited once in each of the
    ``W / S`` windows that cover it, and those visits lie on average ``D = W`` samples apart.
    The share of revisits that are such short ones (the paper's majority ratio) is
    ``gamma = 1 - S / W``, i.e. ``S = (1 - gamma) * W``. Between two passes an instance waits
    about ``(N - W + S) * W / S`` samples. The paper's ImageNet setting is ``W = 2**17 = D`` and
    ``S = 2**14``, so ``gamma = 87.5%``. ``W = S = N`` gives the ordinary epoch-based shuffle.

    **Epoch equivalents** (the paper's footnote 2): the training length is still counted in
    epochs of N samples. Epoch ``e`` (set by :meth:`set_epoch`, which mmengine's loops call)
    yields positions ``[e * N, (e + 1) * N)`` of the output sequence, continuing exactly where
    epoch ``e - 1`` stopped, so ``max_epochs=200`` means ``200 * N`` samples with or without the
    window, and each instance is still seen once per epoch on average. The order is a pure
    function of ``(seed, epoch, rank, world size)``, so a resumed run sees the same samples as
    an uninterrupted one. Each index is a :class:`~pic_plugin.datasets.VisitKey` naming its visit, so
    ``SeededByVisit`` gives an image visited twice in an epoch two different views, the same ones
    after a resume.

    **Distributed.** The epoch's N positions are padded by wrapping to a multiple of the world
    size (``round_up=True``) or truncated to one (``round_up=False``); rank ``r`` takes positions
    ``r, r + world_size, ...``, so every rank draws a disjoint share of every window, and all
    ranks yield the same count.

    Only the windows and passes that an epoch touches are generated, with vectorised numpy.

    Example:
        >>> train_dataloader = dict(
        ...     sampler=dict(type='SlidingWindowSampler', window_size=131072, stride=16384))

    Args:
        dataset (Sized): The dataset; only its length N is used.
        window_size (int): Window size W, the short revisit distance D. Must be a positive
            multiple of ``stride`` and at most N. Defaults to 131072.
        stride (int): Stride S, the number of instances the window shifts per step; at most
            ``window_size``. Defaults to 16384.
        seed (int, optional): Non-negative random seed shared by all ranks. If None, a seed is
            drawn on rank 0 and broadcast with ``mmengine.dist.sync_random_seed``.
            Defaults to None.
        round_up (bool): Whether to pad each epoch by wrapping so that every rank gets
            ``ceil(N / world_size)`` samples; otherwise the epoch's last ``N % world_size``
            samples are dropped and every rank gets ``N // world_size`` (mmengine's
            ``DefaultSampler`` would give the ranks unequal counts). Defaults to True.
        shuffle (bool): Must be True: the window always shuffles. Accepted so that a sampler switched from
            ``DefaultSampler`` on the command line keeps its ``shuffle=True``. Defaults to True.
    """

    def __init__(self,
                 dataset: Sized,
                 window_size: int = 131072,
                 stride: int = 16384,
                 seed: Optional[int] = None,
                 round_up: bool = True,
                 shuffle: bool = True) -> None:
        if not shuffle:
            raise ValueError('SlidingWindowSampler got shuffle=False, but the window always shuffles (PIC Sec. 2.2): '
                             'remove shuffle from train_dataloader.sampler, or use DefaultSampler for a fixed order. '
                             'Switching from the command line: --cfg-options '
                             'train_dataloader.sampler.type=SlidingWindowSampler '
                             'train_dataloader.sampler.window_size=W train_dataloader.sampler.stride=S')
        num_instances = len(dataset)
        self._check_window(window_size, stride, num_instances)
        if seed is None:
            seed = sync_random_seed()
        if seed < 0:
            raise ValueError(f'seed must be non-negative, got seed={seed}; '
                             'pass a seed >= 0 or None to draw one.')
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.num_instances = num_instances
        self.window_size = window_size
        self.stride = stride
        self.seed = seed
        self.round_up = round_up
        self.epoch = 0
        if round_up:
            self.num_samples = math.ceil(num_instances / self.world_size)
        else:
            self.num_samples = num_instances // self.world_size
        self.total_size = self.num_samples * self.world_size

    @staticmethod
    def _check_window(window_size: int, stride: int, num_instances: int) -> None:
        """Raise ``ValueError`` for a window and stride the scheduler cannot use."""
        if window_size <= 0:
            raise ValueError(f'window_size must be positive, got window_size={window_size}; '
                             'the paper uses 131072 for ImageNet.')
        if stride <= 0:
            raise ValueError(f'stride must be positive, got stride={stride}; '
                             'the paper uses 16384 for ImageNet.')
        if stride > window_size:
            raise ValueError(f'stride={stride} is larger than window_size={window_size}, so '
                             'windows would skip instances; use a stride <= window_size.')
        if window_size > num_instances:
            raise ValueError(f'window_size={window_size} is larger than the dataset '
                             f'({num_instances} instances); use a window_size <= '
                             f'{num_instances} (window_size = stride = {num_instances} gives '
                             'the epoch-based shuffle).')
        if window_size % stride != 0:
            raise ValueError(f'window_size={window_size} is not a multiple of stride={stride}; '
                             'choose them so that window_size / stride is an integer, e.g. '
                             f'window_size={stride * (window_size // stride)}.')

    def _pass_permutation(self, pass_index: int) -> np.ndarray:
        """The permutation of ``range(N)`` that pass ``pass_index`` of the stream lays down."""
        generator = np.random.default_rng([self.seed, PASS_PERMUTATION_TAG, pass_index])
        return generator.permutation(self.num_instances)  # (N,)

    def _window_shuffle(self, window_index: int) -> np.ndarray:
        """The order in which window ``window_index`` visits its ``W`` stream positions."""
        generator = np.random.default_rng([self.seed, WINDOW_SHUFFLE_TAG, window_index])
        return generator.permutation(self.window_size)  # (W,)

    def _stream(self, start: int, stop: int) -> np.ndarray:
        """Dataset indices at stream positions ``[start, stop)``."""
        first_pass = start // self.num_instances
        last_pass = (stop - 1) // self.num_instances
        passes = np.concatenate([
            self._pass_permutation(pass_index)
            for pass_index in range(first_pass, last_pass + 1)
        ])  # (num_passes * N,)
        offset = first_pass * self.num_instances
        return passes[start - offset:stop - offset]

    def sequence(self, start: int, stop: int) -> np.ndarray:
        """Dataset indices at positions ``[start, stop)`` of the whole output sequence.

        The output sequence is the order of all ranks together, before the epoch is split
        over ranks; epoch ``e`` is ``sequence(e * N, (e + 1) * N)``.

        Args:
            start (int): First output position, non-negative.
            stop (int): One past the last output position, at least ``start``.

        Returns:
            np.ndarray: ``stop - start`` dataset indices (int64).
        """
        if not 0 <= start <= stop:
            raise ValueError(f'need 0 <= start <= stop, got start={start}, stop={stop}.')
        if start == stop:
            return np.empty(0, dtype=np.int64)
        first_window = start // self.window_size
        last_window = (stop - 1) // self.window_size
        window_indices = np.arange(first_window, last_window + 1)  # (K,)
        stream_start = first_window * self.stride
        stream = self._stream(stream_start, last_window * self.stride + self.window_size)
        shuffles = np.stack([self._window_shuffle(k) for k in window_indices])  # (K, W)
        window_offsets = (window_indices - first_window) * self.stride  # (K,)
        windows = stream[window_offsets[:, None] + shuffles]  # (K, W)
        skipped = first_window * self.window_size
        return windows.reshape(-1)[start - skipped:stop - skipped]

    def __iter__(self) -> Iterator[VisitKey]:
        """Yield this rank's share of epoch ``self.epoch``, each index keyed by its visit (:class:`VisitKey`)."""
        epoch_start = self.epoch * self.num_instances
        indices = self.sequence(epoch_start, epoch_start + self.num_instances)  # (N,)
        indices = np.resize(indices, self.total_size)  # wraps to pad, or truncates
        share = indices[self.rank::self.world_size].tolist()
        return iter(visit_keys(share, self.seed, self.epoch, self.rank, self.world_size))

    def __len__(self) -> int:
        """The number of samples this rank yields per epoch."""
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to yield; mmengine's loops call this before each epoch.

        Args:
            epoch (int): Epoch number; epoch ``e`` covers output positions
                ``[e * N, (e + 1) * N)``.
        """
        self.epoch = epoch
