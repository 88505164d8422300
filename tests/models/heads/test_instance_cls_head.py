import pytest
import torch
import torch.nn.functional as F

from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead


def cosine_softmax_loss(feats, rows, targets, temperature):
    """PIC Eq. 1 written out: cross-entropy of cosine similarities over the given rows."""
    logits = (F.normalize(feats, dim=1) @ F.normalize(rows, dim=1).t()) / temperature
    return F.cross_entropy(logits, targets)


def make_wrapper(params, head, lr=0.1, weight_decay=1e-4):
    wrapper = LazyCorrectedSGD(optimizer=torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
    wrapper.attach(head)
    return wrapper


def test_full_softmax_loss_and_gradients_match_eq1():
    torch.manual_seed(0)
    head = InstanceClsHead(num_classes=50, in_channels=8, temperature=0.2)
    make_wrapper([torch.nn.Parameter(torch.zeros(1))], head)
    feats = torch.randn(6, 8, requires_grad=True)
    sample_idx = torch.tensor([3, 49, 0, 7, 7, 21])
    loss = head.loss(feats, sample_idx)['loss']
    rows = head.table.pending.weight
    reference_rows = head.table.weight.clone().requires_grad_(True)
    reference_feats = feats.detach().clone().requires_grad_(True)
    reference = cosine_softmax_loss(reference_feats, reference_rows, sample_idx, 0.2)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    reference.backward()
    assert torch.allclose(feats.grad, reference_feats.grad, atol=1e-7)
    assert torch.allclose(rows.grad, reference_rows.grad, atol=1e-7)


def test_full_mode_trained_by_lazy_sgd_equals_a_dense_parameter_trained_by_torch_sgd():
    """In the full mode every row is used every step, so the table must follow plain SGD exactly."""
    torch.manual_seed(0)
    num_classes, dim = 40, 8
    head = InstanceClsHead(num_classes=num_classes, in_channels=dim)
    dense_rows = torch.nn.Parameter(head.table.weight.clone())
    feat_layer = torch.nn.Linear(dim, dim)
    dense_layer = torch.nn.Linear(dim, dim)
    dense_layer.load_state_dict(feat_layer.state_dict())
    wrapper = make_wrapper(feat_layer.parameters(), head, lr=0.5, weight_decay=0.01)
    dense_optim = torch.optim.SGD([*dense_layer.parameters(), dense_rows], lr=0.5, momentum=0.9, weight_decay=0.01)
    for _ in range(5):
        inputs, sample_idx = torch.randn(10, dim), torch.randint(0, num_classes, (10, ))
        wrapper.update_params(head.loss(feat_layer(inputs), sample_idx)['loss'])
        dense_optim.zero_grad()
        cosine_softmax_loss(dense_layer(inputs), dense_rows, sample_idx, 0.2).backward()
        dense_optim.step()
    assert torch.allclose(head.table.weight, dense_rows.detach(), atol=1e-6)
    assert torch.allclose(feat_layer.weight, dense_layer.weight, atol=1e-6)


def test_recent_negatives_use_the_batch_and_the_k_most_recent_positives():
    torch.manual_seed(0)
    head = InstanceClsHead(num_classes=100, in_channels=4, negatives='recent', num_negatives=6)
    make_wrapper([torch.nn.Parameter(torch.zeros(1))], head)
    batches = [torch.tensor([10, 11, 12]), torch.tensor([20, 21, 22]), torch.tensor([30, 31, 32])]
    seen = []
    for batch in batches:
        feats = torch.randn(3, 4)
        loss = head.loss(feats, batch)['loss']
        classes = head.table.pending.local_indices
        expected = torch.unique(torch.cat([batch, torch.tensor(seen[-6:], dtype=torch.long)]))
        assert torch.equal(classes, expected)
        rows = head.table.weight[classes]
        reference = cosine_softmax_loss(feats, rows, torch.searchsorted(classes, batch), 0.2)
        assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
        head.table.pop_pending()
        seen.extend(batch.tolist())
    # the FIFO now holds the 6 most recent positives
    assert sorted(head.recent_indices.tolist()) == [20, 21, 22, 30, 31, 32]


def test_recent_mode_updates_only_the_rows_it_used():
    torch.manual_seed(0)
    head = InstanceClsHead(num_classes=100, in_channels=4, negatives='recent', num_negatives=8)
    wrapper = make_wrapper([torch.nn.Parameter(torch.zeros(1))], head)
    before = head.table.weight.clone()
    wrapper.update_params(head.loss(torch.randn(3, 4), torch.tensor([5, 6, 7]))['loss'])
    changed = (head.table.weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 6, 7]
    assert head.table.last_step[[5, 6, 7]].tolist() == [1, 1, 1]
    assert int(head.table.last_step.sum()) == 3


def test_training_without_lazy_sgd_stops_with_the_fix():
    head = InstanceClsHead(num_classes=10, in_channels=4)
    with pytest.raises(RuntimeError, match='LazyCorrectedSGD'):
        head.loss(torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize('kwargs, match', [
    (dict(negatives='sampled'), "negatives='sampled'"),
    (dict(negatives='recent', num_negatives=11), 'num_negatives=11'),
    (dict(temperature=0.0), 'temperature=0.0'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InstanceClsHead(num_classes=10, in_channels=4, **kwargs)


def test_sample_index_beyond_the_table():
    head = InstanceClsHead(num_classes=10, in_channels=4)
    with pytest.raises(ValueError, match='sample_idx 10 is out of range for a table of 10 rows'):
        head.loss(torch.randn(1, 4), torch.tensor([10]))


def test_hard_classes_stay_out_of_checkpoints():
    head = InstanceClsHead(num_classes=10, in_channels=4, label_smoothing=0.2, num_hard_classes=3)
    assert head.hard_classes.shape == (10, 3) and (head.hard_classes == -1).all()  # one-hot until HardClassHook
    assert not any('hard_classes' in key for key in head.state_dict())  # HardClassHook searches again each run
