import pytest
import torch
from torch import nn

from pic_plugin.models.utils.host_state import HostStateMixin


class Counter(HostStateMixin, nn.Module):
    host_state_names = ('count', )

    def __init__(self, size: int = 1) -> None:
        super().__init__()
        self.register_buffer('scale', torch.ones(()))
        self.count = torch.zeros(size, dtype=torch.long)

    def host_state_hint(self, name: str) -> str:
        return 'set size to the checkpoint\'s.'


def test_host_tensors_are_saved_beside_the_buffers_and_stay_on_the_host():
    counter = Counter()
    counter.count += 3
    assert set(counter.state_dict()) == {'scale', 'count'}
    counter.to('meta')
    assert counter.scale.device.type == 'meta' and counter.count.device.type == 'cpu'


def test_a_strict_load_restores_them_and_reports_no_unexpected_key():
    saved = Counter()
    saved.count += 7
    saved.scale.fill_(2.0)
    loaded = Counter()
    result = loaded.load_state_dict(saved.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert int(loaded.count) == 7 and float(loaded.scale) == 2.0


def test_a_missing_key_is_missing_and_a_shape_mismatch_names_the_fix():
    result = Counter().load_state_dict({'scale': torch.ones(())}, strict=False)
    assert result.missing_keys == ['count']
    with pytest.raises(RuntimeError, match=r"count: the checkpoint holds \(3,\) but this model has \(1,\): set size "
                                           r"to the checkpoint's\."):
        Counter().load_state_dict(Counter(size=3).state_dict())


def test_an_unrelated_unexpected_key_is_still_reported():
    state = {**Counter().state_dict(), 'other': torch.zeros(())}
    assert Counter().load_state_dict(state, strict=False).unexpected_keys == ['other']
