"""mmengine checkpoints load under weights_only=True; nothing outside the allow-list does."""
import argparse
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import pic_plugin  # noqa: F401  (registers the allow-list)
from pic_plugin.utils.safe_checkpoint import history_buffer_statistic


def test_a_message_hub_like_checkpoint_loads_with_weights_only(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': {'loss': buffer, 'array': np.arange(3, dtype=np.float32), 'scalar': np.float64(2)}},
               path)
    loaded = torch.load(path)  # torch's default: weights_only=True
    assert loaded['message_hub']['loss'].mean() == 1.5
    assert loaded['message_hub']['array'].tolist() == [0.0, 1.0, 2.0]


def test_any_other_object_is_refused_by_name(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'extra': argparse.Namespace(a=1)}, path)
    with pytest.raises(pickle.UnpicklingError, match='argparse.Namespace'):
        torch.load(path)


def test_the_getattr_stand_in_gives_only_history_buffer_statistics():
    assert history_buffer_statistic(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match=r"refused getattr\(HistoryBuffer, '__init__'\)"):
        history_buffer_statistic(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError, match=r"refused getattr\(os"):
        history_buffer_statistic(__import__('os'), 'system')
