"""KeyedDefaultSampler yields DefaultSampler's indices, each keyed by its place in the epoch of all ranks."""
import pytest
from mmengine.dataset import DefaultSampler

from pic_plugin.datasets import KeyedDefaultSampler, VisitKey


@pytest.mark.parametrize('world_size', [1, 2, 3])
@pytest.mark.parametrize('round_up', [True, False])
def test_the_indices_are_default_samplers_and_the_keys_name_the_visits(world_size, round_up, monkeypatch):
    dataset = list(range(100))
    positions = []
    for rank in range(world_size):
        monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda: (rank, world_size))
        keyed = KeyedDefaultSampler(dataset, shuffle=True, seed=3, round_up=round_up)
        plain = DefaultSampler(dataset, shuffle=True, seed=3, round_up=round_up)
        keyed.set_epoch(2), plain.set_epoch(2)
        keys = list(keyed)
        assert keys == list(plain) and all(isinstance(key, VisitKey) for key in keys)
        assert {(key.seed, key.epoch) for key in keys} == {(3, 2)}
        positions += [key.position for key in keys]
    assert sorted(positions) == list(range(len(positions)))  # every place of the epoch once, on one rank
