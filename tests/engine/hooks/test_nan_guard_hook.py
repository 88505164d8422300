"""NaNGuardHook: a non-finite loss stops training before a checkpoint, on every rank at once."""
from types import SimpleNamespace

import pytest
import torch

from distributed import run_distributed
from pic_plugin.engine.hooks import NaNGuardHook


def runner(tmp_path) -> SimpleNamespace:
    return SimpleNamespace(work_dir=str(tmp_path), iter=6, epoch=1)


def test_a_finite_loss_passes_and_a_nan_names_the_last_checkpoint(tmp_path):
    hook = NaNGuardHook()
    hook.after_train_iter(runner(tmp_path), 0, outputs=dict(loss=torch.tensor(2.5, requires_grad=True)))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    with pytest.raises(FloatingPointError, match=r'loss is nan .* iteration 7 \(epoch 2\).*--resume .*epoch_1\.pth'):
        hook.after_train_iter(runner(tmp_path), 0, outputs=dict(loss=torch.tensor(float('nan'))))


def nan_on_rank_1(rank: int, world_size: int, work_dir: str) -> str:
    loss = torch.tensor(float('inf') if rank == 1 else 1.0)
    try:
        NaNGuardHook().after_train_iter(SimpleNamespace(work_dir=work_dir, iter=0, epoch=0), 0, outputs=dict(loss=loss))
    except FloatingPointError as error:
        return str(error)
    return 'trained on'


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    messages = run_distributed(nan_on_rank_1, 2, str(tmp_path))
    assert messages[0].startswith('loss is 1.0 on this rank (non-finite on at least one rank)')
    assert messages[1].startswith('loss is inf on this rank')
