"""A training step of InstanceClsHead or MemoryBankNCE reads no value back from the compute device: every choice of
the step (the range check, the classes, the stale rows and their transitions, each sample's column, the noise seed,
whether NPID's normaliser is estimated yet) is made on the host.

The steps run on the meta device, which has shapes but no values: there, any read of a device value (``int()``,
``.item()``, ``nonzero``, ``unique``, a boolean mask, a copy to the host) raises. On a GPU each such read would make
the host wait for every kernel queued before it (the backbone's forward among them) before it could queue more.
"""
import pytest
import torch
from mmpretrain.structures import DataSample

from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead, MemoryBankNCE
from pic_plugin.models.selfsup import InstanceClassification
from pic_plugin.models.utils import gather

META = torch.device('meta')
HEADS = {
    'recent negatives': dict(negatives='recent', num_negatives=8),
    'full soft-max': dict(negatives='full'),
    'hard-class smoothing': dict(negatives='full', label_smoothing=0.2, num_hard_classes=3),
}


@pytest.fixture(autouse=True)
def meta_has_no_autocast(monkeypatch):
    """torch's autocast knows no 'meta' device type: asked about it, it raises instead of saying "off"."""
    is_autocast_enabled = torch.is_autocast_enabled
    monkeypatch.setattr(torch, 'is_autocast_enabled',
                        lambda *device_type: False if device_type == ('meta', ) else is_autocast_enabled(*device_type))


def meta_head(**kwargs) -> InstanceClsHead:
    head = InstanceClsHead(num_classes=40, in_channels=8, **kwargs).to(META)
    if head.num_hard_classes is not None:
        head.set_hard_classes(torch.randint(40, (40, 3), device=META))
    return head


@pytest.mark.parametrize('name', list(HEADS))
def test_head_steps_on_the_meta_device_read_no_value_back(name):
    """Four steps (the later ones bring stale rows forward by the recorded transitions), each with host labels as
    InstanceClassification gives them, and LazyCorrectedSGD's row update."""
    head = meta_head(**HEADS[name])
    feats = torch.randn(6, 8, device=META, requires_grad=True)
    wrapper = LazyCorrectedSGD(optimizer=torch.optim.SGD([feats], lr=0.1, momentum=0.9, weight_decay=1e-4))
    wrapper.register_rows(head)
    for step in range(4):
        sample_idx = torch.arange(6) + 6 * step  # host labels
        loss = head.loss(feats, sample_idx)['loss']
        assert loss.device == META
        wrapper.update_params(loss)
    assert head.rows.num_steps == 4
    assert head.rows.weight.device == META and head.rows.last_step.device.type == 'cpu'
    assert int(head.rows.last_step.max()) == 4  # the host column saw every update


def test_detached_views_on_the_meta_device_read_no_value_back():
    """The small crops of multi-crop: their columns among the step's classes are found on the host too."""
    head = meta_head(negatives='recent', num_negatives=8)
    feats, small = torch.randn(4, 8, device=META, requires_grad=True), torch.randn(8, 8, device=META)
    for step in range(3):
        sample_idx = torch.arange(4) + 4 * step
        loss = head.loss(feats, sample_idx, detached_feats=small, detached_sample_idx=sample_idx.repeat(2))['loss']
        loss.backward()
        head.rows.step(lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert head.rows.num_steps == 3


NPID_HEADS = {
    'nce': dict(loss='nce'),
    'nce with the proximal term': dict(loss='nce', proximal_weight=30.),
    'softmax with the proximal term': dict(loss='softmax', proximal_weight=30.),
}


@pytest.mark.parametrize('name', list(NPID_HEADS))
def test_npid_steps_on_the_meta_device_read_no_value_back(name):
    """Four steps with the bank on the device, each updating it: under NCE the first estimates the normaliser, the
    later ones use it, and every one seeds its noise draw from the host step count."""
    head = MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5, **NPID_HEADS[name]).to(META)
    # torch has no generator for the meta device (its tensors hold no values to draw): a host one stands in, which
    # randint on the meta device accepts and ignores; a GPU bank has its own GPU generator
    head._noise_generators[META] = torch.Generator()
    feats = torch.randn(6, 8, device=META, requires_grad=True)
    for step in range(4):
        losses = head.loss(feats, torch.arange(6) + 6 * step)  # host labels
        assert all(loss.device == META for loss in losses.values())
        sum(losses.values()).backward()
    assert head.bank.weight.device == META and head.normaliser.device == META
    assert head.num_steps.device.type == 'cpu' and int(head.num_steps) == 4


@pytest.mark.parametrize('loss_mode', ['nce', 'softmax'])
def test_npid_steps_with_a_host_bank_pick_their_rows_on_the_host(loss_mode, monkeypatch):
    """With ``placement='host'`` the noise is drawn where the bank lives, so no row index comes back from the device.

    The bank's write is recorded instead of made: the copy of device rows into host memory goes through pinned
    memory without blocking on a GPU, a copy the meta device cannot make.
    """
    head = MemoryBankNCE(num_classes=40, in_channels=8, loss=loss_mode, num_noise=5, placement='host').to(META)
    writes = []
    monkeypatch.setattr(head.bank, 'write', lambda indices, weight: writes.append((indices.device, weight.device)))
    feats = torch.randn(6, 8, device=META, requires_grad=True)
    for step in range(3):
        loss = head.loss(feats, torch.arange(6) + 6 * step)['loss']
        assert loss.device == META
        loss.backward()
    assert head.bank.weight.device.type == 'cpu'
    assert writes == [(torch.device('cpu'), META)] * 3


def test_instance_labels_are_made_on_the_host():
    """InstanceClassification hands the head host labels: made from the data samples, they never visit the GPU."""
    labels = InstanceClassification.instance_labels([DataSample(metainfo=dict(sample_idx=i)) for i in (3, 1)],
                                                    torch.device('cpu'))
    assert labels.device.type == 'cpu' and labels.tolist() == [3, 1]


def test_host_collectives_take_the_default_group_under_gloo_and_one_gloo_group_under_nccl(monkeypatch):
    """Under NCCL the host values of a step (labels, range bounds, the batch sizes) go through one gloo group over
    the same ranks, made once; under gloo through the default group."""
    made = []
    monkeypatch.setattr(gather, 'is_distributed', lambda: True)
    monkeypatch.setattr(gather.dist, 'get_backend', lambda group=None: 'gloo')
    assert gather.host_group() is None
    monkeypatch.setattr(gather.dist, 'get_backend', lambda group=None: 'nccl')
    monkeypatch.setattr(gather.dist, 'new_group', lambda backend=None: made.append(backend) or object())
    monkeypatch.setattr(gather, '_HOST_GROUPS', {})
    first, second = gather.host_group(), gather.host_group()
    assert first is second and made == ['gloo']
