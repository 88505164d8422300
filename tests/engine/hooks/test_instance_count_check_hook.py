"""InstanceCountCheckHook sizes a head built with num_classes='auto' to the training set, and stops a run whose
head (classifier rows or memory bank) does not fit it."""
from types import SimpleNamespace
from unittest.mock import Mock

import pytest
import torch
from mmengine.runner import BaseLoop
from torch import nn

from pic_plugin.engine.hooks import InstanceCountCheckHook
from pic_plugin.models.heads import InstanceClsHead, MemoryBankNCE

HEADS = {
    'InstanceClsHead': lambda num_rows: InstanceClsHead(num_classes=num_rows, in_channels=8),
    'MemoryBankNCE': lambda num_rows: MemoryBankNCE(num_classes=num_rows, in_channels=8, num_noise=4),
}


def runner_with(head, num_images, model=None):
    model = model or nn.Module()
    model.head = head
    return SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=range(num_images)))


@pytest.mark.parametrize('name', HEADS)
def test_a_head_of_another_size_than_the_data_set_is_refused_with_the_fix(name):
    with pytest.raises(ValueError, match=f'{name} has num_classes=12 rows but the training set has 10 images: '
                                         r'set model.head.num_classes=10'):
        InstanceCountCheckHook().before_train(runner_with(HEADS[name](12), 10))
    InstanceCountCheckHook().before_train(runner_with(HEADS[name](10), 10))  # the right size passes


AUTO_HEADS = {
    'InstanceClsHead': lambda: InstanceClsHead(num_classes='auto', in_channels=8),
    'MemoryBankNCE': lambda: MemoryBankNCE(num_classes='auto', in_channels=8, num_noise=4),
}


@pytest.mark.parametrize('name', AUTO_HEADS)
def test_an_auto_sized_head_has_no_rows_until_allocated_and_then_those_of_an_explicit_size(name):
    torch.manual_seed(0)
    explicit = HEADS[name](10)
    head = AUTO_HEADS[name]()
    assert head.num_classes is None and not any('rows' in key or 'bank' in key for key in head.state_dict())
    with pytest.raises(RuntimeError, match=r"num_classes='auto' and no (rows|bank) yet: .* call allocate_rows\(N\)"):
        head.loss(torch.randn(2, 8), torch.tensor([0, 1]))
    torch.manual_seed(0)  # the state the explicit head drew its rows from
    head.allocate_rows(10)
    assert head.num_classes == 10 and head.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(value, explicit.state_dict()[key]) for key, value in head.state_dict().items())


def training_runner(head, num_images, train_loop, model=None):
    """A runner whose ``train()`` has built its loop (``train_loop`` a ``BaseLoop``) or not (a config dict)."""
    runner = runner_with(head, num_images, model)
    runner._train_loop, runner.logger = train_loop, Mock()
    return runner


@pytest.mark.parametrize('name', AUTO_HEADS)
def test_an_auto_sized_head_gets_one_row_per_training_image_before_the_run_loads_a_checkpoint(name):
    head = AUTO_HEADS[name]()
    runner = training_runner(head, 10, Mock(spec=BaseLoop))
    InstanceCountCheckHook().before_run(runner)
    rows = head.rows if name == 'InstanceClsHead' else head.bank
    assert head.num_classes == 10 and rows.weight.shape == (10, 8)
    assert runner.logger.info.call_args.args[0] == (
        f"InstanceCountCheckHook: 10 training images, so {name} (num_classes='auto') gets 10 rows "
        '(model.head.num_classes=10 pins this size).')
    InstanceCountCheckHook().before_train(runner)  # and the check passes


def test_validation_and_test_runs_leave_an_auto_sized_head_without_rows():
    head = AUTO_HEADS['InstanceClsHead']()
    runner = training_runner(head, 10, dict(type='EpochBasedTrainLoop'))
    InstanceCountCheckHook().before_run(runner)
    assert head.num_classes is None and head.rows is None


def test_an_explicit_size_is_left_as_it_is_and_checked_before_training():
    head = HEADS['InstanceClsHead'](12)
    runner = training_runner(head, 10, Mock(spec=BaseLoop))
    InstanceCountCheckHook().before_run(runner)
    assert head.num_classes == 12
    with pytest.raises(ValueError, match="set model.head.num_classes=10 in the config .*, or num_classes='auto'"):
        InstanceCountCheckHook().before_train(runner)


def test_the_hard_classes_of_an_auto_sized_head_go_where_the_runner_put_the_model():
    head = InstanceClsHead(num_classes='auto', in_channels=8, label_smoothing=0.2, num_hard_classes=3)
    model = nn.Module()
    model.backbone = nn.Linear(2, 2, device='meta')  # a model the runner has moved (to a GPU, say)
    InstanceCountCheckHook().before_run(training_runner(head, 10, Mock(spec=BaseLoop), model))
    assert head.targets.hard_classes.shape == (10, 3) and head.targets.hard_classes.device.type == 'meta'
    assert head.rows.weight.device.type == 'cpu'  # the rows move to the features' device at the first step
