"""SlidingWindowSampler measured against the visit statistics of PIC section 2.2."""
import math

import numpy as np
import pytest
import torch
from mmpretrain.registry import DATA_SAMPLERS

from pic_plugin.datasets.samplers import SlidingWindowSampler
from pic_plugin.datasets.samplers import sliding_window_sampler as sampler_module

NUM_INSTANCES = 20000
WINDOW_SIZE = 2048


class FakeDataset:
    """A dataset of which the sampler only reads the length."""

    def __init__(self, num_instances: int) -> None:
        self.num_instances = num_instances

    def __len__(self) -> int:
        return self.num_instances


def epochs_of(sampler: SlidingWindowSampler, num_epochs: int) -> np.ndarray:
    """The sampler's output for epochs ``0 .. num_epochs - 1``, laid end to end."""
    epochs = []
    for epoch in range(num_epochs):
        sampler.set_epoch(epoch)
        epochs.append(np.fromiter(iter(sampler), dtype=np.int64))
    return np.concatenate(epochs)


def visits_by_instance(sequence: np.ndarray) -> tuple:
    """Each visit's output position, grouped by instance and ascending within an instance.

    Returns:
        tuple: ``(positions, new_instance)``, where ``new_instance`` marks each instance's
        first visit.
    """
    positions = np.argsort(sequence, kind='stable')  # (T,)
    instances = sequence[positions]  # (T,)
    new_instance = np.r_[True, instances[1:] != instances[:-1]]  # (T,)
    return positions, new_instance


def revisit_gaps(sequence: np.ndarray) -> np.ndarray:
    """Distances between consecutive visits of the same instance."""
    positions, new_instance = visits_by_instance(sequence)
    return np.diff(positions)[~new_instance[1:]]


def interior_run_lengths(sequence: np.ndarray, window_size: int) -> np.ndarray:
    """Visits per run, a run being visits less than ``2 * window_size`` apart.

    Each instance's first and last runs are left out: the stream's first windows cover fewer
    than ``W / S`` positions, and the last run may be cut off by the end of the sequence.
    """
    positions, new_instance = visits_by_instance(sequence)
    long_gap = np.r_[False, np.diff(positions) >= 2 * window_size] & ~new_instance
    run_start = new_instance | long_gap  # (T,)
    run_lengths = np.bincount(np.cumsum(run_start) - 1)  # (R,)
    first_run = new_instance[run_start]  # (R,)
    last_run = np.r_[first_run[1:], True]  # (R,)
    return run_lengths[~first_run & ~last_run]


@pytest.fixture(scope='module', params=[256, 1024], ids=['stride256', 'stride1024'])
def schedule(request) -> tuple:
    """Four passes of the stream with N = 20000, W = 2048: ``(stride, output sequence)``."""
    stride = request.param
    sampler = SlidingWindowSampler(
        FakeDataset(NUM_INSTANCES), window_size=WINDOW_SIZE, stride=stride, seed=0)
    num_epochs = 4 * WINDOW_SIZE // stride  # one pass of the stream lasts W / S epochs
    return stride, epochs_of(sampler, num_epochs)


def test_visits_come_in_runs_of_window_over_stride(schedule):
    stride, sequence = schedule
    visits_per_pass = WINDOW_SIZE // stride
    run_lengths = interior_run_lengths(sequence, WINDOW_SIZE)
    assert len(run_lengths) > NUM_INSTANCES
    assert run_lengths.min() == visits_per_pass
    assert np.mean(run_lengths == visits_per_pass) > 0.98
    # Runs merge only when an instance ends one pass and starts the next within about W.
    assert run_lengths.max() <= 2 * visits_per_pass


def test_short_revisits_are_window_size_apart(schedule):
    _, sequence = schedule
    gaps = revisit_gaps(sequence)
    short_gaps = gaps[gaps < 2 * WINDOW_SIZE]
    assert short_gaps.mean() == pytest.approx(WINDOW_SIZE, rel=0.02)


def test_runs_are_separated_by_a_pass(schedule):
    stride, sequence = schedule
    gaps = revisit_gaps(sequence)
    long_gaps = gaps[gaps >= 2 * WINDOW_SIZE]
    expected = (NUM_INSTANCES - WINDOW_SIZE + stride) * WINDOW_SIZE / stride
    assert long_gaps.mean() == pytest.approx(expected, rel=0.03)


def test_share_of_short_revisits_is_majority_ratio(schedule):
    stride, sequence = schedule
    majority_ratio = 1 - stride / WINDOW_SIZE
    # Within whole runs every visit but the run's last is followed by a short revisit.
    run_lengths = interior_run_lengths(sequence, WINDOW_SIZE)
    short_revisit_share = 1 - len(run_lengths) / run_lengths.sum()
    assert short_revisit_share == pytest.approx(majority_ratio, abs=0.01)
    # The same share of each window's instances recurs in the next window.
    num_windows = len(sequence) // WINDOW_SIZE
    windows = sequence[:num_windows * WINDOW_SIZE].reshape(num_windows, WINDOW_SIZE)
    recurring_share = [
        len(np.intersect1d(windows[k], windows[k + 1])) / WINDOW_SIZE
        for k in range(num_windows - 1)
    ]
    assert np.mean(recurring_share) == pytest.approx(majority_ratio, abs=0.01)


def test_window_equal_to_dataset_is_epoch_shuffle():
    sampler = SlidingWindowSampler(
        FakeDataset(NUM_INSTANCES), window_size=NUM_INSTANCES, stride=NUM_INSTANCES, seed=0)
    sequence = epochs_of(sampler, 6)
    epochs = sequence.reshape(6, NUM_INSTANCES)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_INSTANCES))
    assert not np.array_equal(epochs[0], epochs[1])
    # Proposition 1: visiting every instance once per epoch gives a mean revisit distance of N.
    assert revisit_gaps(sequence).mean() == pytest.approx(NUM_INSTANCES, rel=0.02)


def make_sampler(seed: int = 0, round_up: bool = True) -> SlidingWindowSampler:
    """A small sampler whose windows and epochs fall out of step with the passes."""
    return SlidingWindowSampler(
        FakeDataset(1003), window_size=256, stride=64, seed=seed, round_up=round_up)


def test_epochs_continue_the_output_sequence():
    sampler = make_sampler()
    num_epochs = 9
    sequence = sampler.sequence(0, num_epochs * 1003)
    np.testing.assert_array_equal(epochs_of(sampler, num_epochs), sequence)
    # Slices that start and stop inside windows and passes agree with the whole sequence.
    for start, stop in [(0, 1), (100, 2900), (4000, 4001), (2500, 9027)]:
        np.testing.assert_array_equal(sampler.sequence(start, stop), sequence[start:stop])
    assert len(sampler.sequence(50, 50)) == 0


def test_windows_hold_their_stream_positions():
    sampler = make_sampler()
    window_size, stride = 256, 64
    windows = sampler.sequence(0, 40 * window_size).reshape(40, window_size)
    shared = [len(np.intersect1d(windows[k], windows[k + 1])) for k in range(39)]
    # Consecutive windows share W - S positions; a window spanning two passes may repeat
    # an instance, so a few share more or fewer instances.
    assert np.median(shared) == window_size - stride
    assert not np.array_equal(windows[0][:window_size - stride], windows[1][:window_size - stride])


def test_order_depends_only_on_the_seed():
    np.random.seed(1)
    torch.manual_seed(1)
    first = epochs_of(make_sampler(seed=5), 3)
    np.random.seed(2)
    torch.manual_seed(2)
    np.testing.assert_array_equal(epochs_of(make_sampler(seed=5), 3), first)
    assert not np.array_equal(epochs_of(make_sampler(seed=6), 3), first)


def test_fresh_sampler_resumes_at_epoch():
    uninterrupted = epochs_of(make_sampler(), 7).reshape(7, 1003)
    resumed = make_sampler()
    for epoch in (6, 3):
        resumed.set_epoch(epoch)
        np.testing.assert_array_equal(list(resumed), uninterrupted[epoch])


def test_seed_none_uses_synced_seed(monkeypatch):
    monkeypatch.setattr(sampler_module, 'sync_random_seed', lambda: 77)
    sampler = SlidingWindowSampler(FakeDataset(1003), window_size=256, stride=64)
    assert sampler.seed == 77
    np.testing.assert_array_equal(epochs_of(sampler, 2), epochs_of(make_sampler(seed=77), 2))


@pytest.mark.parametrize('round_up', [True, False])
@pytest.mark.parametrize('world_size', [1, 2, 4])
def test_ranks_split_each_epoch(monkeypatch, world_size, round_up):
    epoch = 5
    whole_epoch = make_sampler().sequence(epoch * 1003, (epoch + 1) * 1003)
    shares = []
    for rank in range(world_size):
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda r=rank: (r, world_size))
        sampler = make_sampler(round_up=round_up)
        sampler.set_epoch(epoch)
        shares.append(np.array(list(sampler)))
        assert len(sampler) == len(shares[-1])
    share_size = math.ceil(1003 / world_size) if round_up else 1003 // world_size
    assert all(len(share) == share_size for share in shares)
    # Interleaving the shares gives back the epoch's positions, each taken by one rank.
    interleaved = np.stack(shares, axis=1).reshape(-1)
    kept = min(1003, len(interleaved))
    np.testing.assert_array_equal(interleaved[:kept], whole_epoch[:kept])
    padding = len(interleaved) - kept
    np.testing.assert_array_equal(interleaved[kept:], whole_epoch[:padding])


@pytest.mark.parametrize('window_size, stride, num_instances, named', [
    (0, 1, 100, 'window_size=0'),
    (-8, 4, 100, 'window_size=-8'),
    (64, 0, 100, 'stride=0'),
    (64, -2, 100, 'stride=-2'),
    (32, 64, 100, 'stride=64'),
    (256, 64, 100, 'window_size=256'),
    (100, 30, 1000, 'window_size=100'),
])
def test_bad_window_raises(window_size, stride, num_instances, named):
    with pytest.raises(ValueError, match=named):
        SlidingWindowSampler(
            FakeDataset(num_instances), window_size=window_size, stride=stride, seed=0)


def test_negative_seed_raises():
    with pytest.raises(ValueError, match='seed=-1'):
        make_sampler(seed=-1)


def test_imagenet_scale_epoch_from_registry():
    num_instances = 1_281_167
    sampler = DATA_SAMPLERS.build(
        dict(type='SlidingWindowSampler', window_size=131072, stride=16384),
        default_args=dict(dataset=FakeDataset(num_instances), seed=0))
    assert isinstance(sampler, SlidingWindowSampler)
    sampler.set_epoch(7)  # its windows span passes 0 and 1 of the stream
    indices = np.array(list(sampler))
    assert len(indices) == len(sampler) == num_instances
    assert indices.min() >= 0 and indices.max() < num_instances


def test_a_sampler_switched_from_default_sampler_on_the_command_line_keeps_shuffle_true():
    from mmengine.config import Config
    cfg = Config(dict(train_dataloader=dict(sampler=dict(type='DefaultSampler', shuffle=True))))
    cfg.merge_from_dict({'train_dataloader.sampler.type': 'SlidingWindowSampler',
                         'train_dataloader.sampler.window_size': 64, 'train_dataloader.sampler.stride': 16})
    sampler = DATA_SAMPLERS.build(cfg.train_dataloader.sampler, default_args=dict(dataset=FakeDataset(256), seed=0))
    # shuffle=True is accepted (the window shuffles anyway) and the window is the one asked for
    assert isinstance(sampler, SlidingWindowSampler) and (sampler.window_size, sampler.stride) == (64, 16)
    assert len(list(sampler)) == 256


def test_shuffle_false_is_refused_with_the_override_to_write():
    with pytest.raises(ValueError, match=r'shuffle=False.*always shuffles.*train_dataloader\.sampler\.window_size=W'):
        SlidingWindowSampler(FakeDataset(1003), window_size=256, stride=64, seed=0, shuffle=False)
