"""InstanceCountCheckHook stops a run whose head (classifier rows or memory bank) does not fit the training set."""
from types import SimpleNamespace

import pytest

from pic_plugin.engine.hooks import InstanceCountCheckHook
from pic_plugin.models.heads import InstanceClsHead, MemoryBankNCE

HEADS = {
    'InstanceClsHead': lambda num_rows: InstanceClsHead(num_classes=num_rows, in_channels=8),
    'MemoryBankNCE': lambda num_rows: MemoryBankNCE(num_classes=num_rows, in_channels=8, num_noise=4),
}


def runner_with(head, num_images):
    return SimpleNamespace(model=SimpleNamespace(head=head), train_dataloader=SimpleNamespace(dataset=range(num_images)))


@pytest.mark.parametrize('name', HEADS)
def test_a_head_of_another_size_than_the_data_set_is_refused_with_the_fix(name):
    with pytest.raises(ValueError, match=f'{name} has num_classes=12 rows but the training set has 10 images: '
                                         r'set model.head.num_classes=10'):
        InstanceCountCheckHook().before_train(runner_with(HEADS[name](12), 10))
    InstanceCountCheckHook().before_train(runner_with(HEADS[name](10), 10))  # the right size passes
