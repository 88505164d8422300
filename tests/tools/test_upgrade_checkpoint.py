"""tools/model_converters/upgrade_checkpoint.py: a checkpoint of the old layout becomes one the new head resumes."""
import sys

import pytest
import torch

from conftest import REPO_ROOT, run_cli
from model_converters.upgrade_checkpoint import upgrade
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads.instance_cls_head import InstanceClsHead

TOOL = REPO_ROOT / 'tools' / 'model_converters' / 'upgrade_checkpoint.py'


def trained_checkpoint() -> dict:
    """A checkpoint of three steps of a small recent-negatives head, in today's layout."""
    torch.manual_seed(0)
    features = torch.nn.Linear(8, 8)
    head = InstanceClsHead(num_classes=64, in_channels=8, negatives='recent', num_negatives=16)
    optim = LazyCorrectedSGD(torch.optim.SGD(features.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4))
    optim.register_rows(head)
    for step in range(3):
        optim.update_params(head.loss(features(torch.randn(8, 8)), torch.arange(8) + 8 * step)['loss'])
    state = {f'head.{key}': value for key, value in head.state_dict().items()}
    state.update({f'neck.{key}': value for key, value in features.state_dict().items()})
    return {'meta': {'epoch': 1}, 'state_dict': state, 'optimizer': optim.state_dict()}


def old_layout(checkpoint: dict) -> dict:
    """What pic_plugin wrote before 2026-12-01 for the same run."""
    state = {}
    for key, value in checkpoint['state_dict'].items():
        if key == 'head.rows.transitions':
            continue
        key = key.replace('head.rows.', 'head.table.').replace('head.negatives.', 'head.')
        state[key] = value
    transitions = checkpoint['state_dict']['head.rows.transitions']
    optimizer = {**checkpoint['optimizer'],
                 'lazy_correction': {'num_steps': len(transitions), 'transitions': transitions}}
    return {**checkpoint, 'state_dict': state, 'optimizer': optimizer}


def test_an_old_checkpoint_converts_to_the_new_one_exactly_and_loads_strictly(tmp_path):
    new = trained_checkpoint()
    old = old_layout(new)
    with pytest.raises(ValueError, match='upgrade_checkpoint.py'):  # resuming the old file says what to run
        LazyCorrectedSGD(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1, momentum=0.9)).load_state_dict(
            old['optimizer'])
    torch.save(old, tmp_path / 'old.pth')
    converted = run_cli([sys.executable, TOOL, tmp_path / 'old.pth', tmp_path / 'new.pth'], cwd=REPO_ROOT)
    assert converted.returncode == 0, converted.stderr[-3000:]
    got = torch.load(tmp_path / 'new.pth', weights_only=True)
    assert sorted(got['state_dict']) == sorted(new['state_dict'])
    for key, value in new['state_dict'].items():
        assert torch.equal(got['state_dict'][key], value), key
    assert 'lazy_correction' not in got['optimizer'] and got['meta'] == new['meta']
    head = InstanceClsHead(num_classes=64, in_channels=8, negatives='recent', num_negatives=16)
    head.load_state_dict({key[len('head.'):]: value for key, value in got['state_dict'].items()
                          if key.startswith('head.')}, strict=True)
    assert head.rows.num_steps == 3


def test_the_converter_refuses_what_it_cannot_convert(tmp_path):
    new = trained_checkpoint()
    with pytest.raises(ValueError, match='already in the new layout'):
        upgrade(new, tmp_path / 'x.pth')
    with pytest.raises(ValueError, match='no head.table'):
        upgrade({'state_dict': {'head.bank.weight': torch.zeros(2, 2)}}, tmp_path / 'npid.pth')
    old = old_layout(new)
    del old['optimizer']['lazy_correction']
    with pytest.raises(ValueError, match='transitions that bring its rows forward are lost'):
        upgrade(old, tmp_path / 'export.pth')
    torch.save(new, tmp_path / 'exists.pth')
    refused = run_cli([sys.executable, TOOL, tmp_path / 'exists.pth', tmp_path / 'exists.pth'], cwd=REPO_ROOT)
    assert refused.returncode != 0 and 'never overwrites' in refused.stderr
