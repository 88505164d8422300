import pytest
import torch
import torch.nn.functional as F

from float_bounds import assert_within, cosine_logit_error, cosine_softmax_gradient_bound, cross_entropy_error
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.utils import RowTable


def cosine_logits(feats, rows, temperature):
    """The logits of PIC Eq. 1: cosine similarities of features and rows over the temperature, ``(B, C)``."""
    return (F.normalize(feats, dim=1) @ F.normalize(rows, dim=1).t()) / temperature


def cosine_softmax_loss(feats, rows, targets, temperature):
    """PIC Eq. 1 written out: cross-entropy of cosine similarities over the given rows."""
    return F.cross_entropy(cosine_logits(feats, rows, temperature), targets)


def make_wrapper(params, head, lr=0.1, weight_decay=1e-4):
    wrapper = LazyCorrectedSGD(optimizer=torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
    wrapper.attach(head)
    return wrapper


def test_full_softmax_loss_and_gradients_match_eq1():
    torch.manual_seed(0)
    num_classes, dim, temperature = 50, 8, 0.2
    head = InstanceClsHead(num_classes=num_classes, in_channels=dim, temperature=temperature)
    make_wrapper([torch.nn.Parameter(torch.zeros(1))], head)
    feats = torch.randn(6, dim, requires_grad=True)
    sample_idx = torch.tensor([3, 49, 0, 7, 7, 21])
    loss = head.loss(feats, sample_idx)['loss']
    rows = head.table.pending.weight
    # Eq. 1 in float64 on the same float32 inputs: the reference has no rounding worth counting, so the head's
    # float32 results must lie within float32's error bounds of it (tests/float_bounds.py), on any kernel.
    reference_rows = head.table.weight.double().requires_grad_(True)
    reference_feats = feats.detach().double().requires_grad_(True)
    reference = cosine_softmax_loss(reference_feats, reference_rows, sample_idx, temperature)
    logit_error = cosine_logit_error(dim, temperature)
    assert_within(loss.detach(), reference.detach(),
                  cross_entropy_error(logit_error, num_classes, len(sample_idx), reference.item()), 'loss')
    loss.backward()
    reference.backward()
    with torch.no_grad():
        probabilities = cosine_logits(reference_feats, reference_rows, temperature).softmax(dim=1)  # (B, C)
        targets = F.one_hot(sample_idx, num_classes).double()
        coefficients = (probabilities + targets) / len(sample_idx)  # (B, C) >= |dL/dlogits|
        feat_bound = cosine_softmax_gradient_bound(reference_feats, reference_rows, coefficients, temperature,
                                                   logit_error)
        row_bound = cosine_softmax_gradient_bound(reference_rows, reference_feats, coefficients.t(), temperature,
                                                  logit_error)
    assert_within(feats.grad, reference_feats.grad, feat_bound, 'feature gradient')
    assert_within(rows.grad, reference_rows.grad, row_bound, 'row gradient')
    assert row_bound.max() < 1e-3 * reference_rows.grad.abs().max()  # the bound still catches a wrong formula


def test_full_mode_trained_by_lazy_sgd_equals_a_dense_parameter_trained_by_torch_sgd():
    """In the full mode every row is used every step, so the table must follow plain SGD exactly.

    Both sides run in float64 (the head's table too), so that the comparison checks the update rule and not
    float32 rounding: after 5 steps the two differ by float64 rounding (about 1e-16 of the gradients, which
    stay below 1e2 here), while a wrong rule (a missed weight-decay or momentum term) moves rows by over 1e-3.
    """
    torch.manual_seed(0)
    num_classes, dim = 40, 8
    head = InstanceClsHead(num_classes=num_classes, in_channels=dim)
    head.table = RowTable(num_classes, dim, dtype=torch.float64)
    dense_rows = torch.nn.Parameter(head.table.weight.clone())
    feat_layer = torch.nn.Linear(dim, dim).double()
    dense_layer = torch.nn.Linear(dim, dim).double()
    dense_layer.load_state_dict(feat_layer.state_dict())
    wrapper = make_wrapper(feat_layer.parameters(), head, lr=0.5, weight_decay=0.01)
    dense_optim = torch.optim.SGD([*dense_layer.parameters(), dense_rows], lr=0.5, momentum=0.9, weight_decay=0.01)
    for _ in range(5):
        inputs, sample_idx = torch.randn(10, dim, dtype=torch.float64), torch.randint(0, num_classes, (10, ))
        wrapper.update_params(head.loss(feat_layer(inputs), sample_idx)['loss'])
        dense_optim.zero_grad()
        cosine_softmax_loss(dense_layer(inputs), dense_rows, sample_idx, 0.2).backward()
        dense_optim.step()
    torch.testing.assert_close(head.table.weight, dense_rows.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(feat_layer.weight, dense_layer.weight, rtol=0, atol=1e-10)


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
        rows = head.table.weight[classes].double()  # Eq. 1 over exactly these rows, in float64
        reference = cosine_softmax_loss(feats.double(), rows, torch.searchsorted(classes, batch), 0.2).item()
        assert abs(loss.item() - reference) <= cross_entropy_error(cosine_logit_error(4, 0.2), len(classes),
                                                                   len(batch), reference)
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


@pytest.mark.parametrize('kwargs, match', [
    (dict(negatives='recent', num_negatives=11),
     r'num_negatives=11 must lie in \[1, num_classes=10\]: lower model.head.num_negatives'),
    (dict(label_smoothing=0.2, num_hard_classes=10),
     r'num_hard_classes=10 must lie in \[1, num_classes - 1 = 9\]: lower model.head.num_hard_classes'),
])
def test_an_auto_sized_head_checks_what_depends_on_the_size_when_it_gets_it(kwargs, match):
    head = InstanceClsHead(num_classes='auto', in_channels=4, **kwargs)
    with pytest.raises(ValueError, match=match):
        head.allocate_rows(10)
    head.allocate_rows(12)
    assert head.table.weight.shape == (12, 4)
    if head.label_smoothing:
        assert head.hard_classes.shape == (12, 10)  # one-hot until HardClassHook


@pytest.mark.parametrize('num_classes', ['Auto', 0, 2.5])
def test_a_num_classes_that_is_neither_a_size_nor_auto_is_refused(num_classes):
    with pytest.raises(ValueError, match=f"got num_rows={num_classes!r}, .* or to 'auto'"):
        InstanceClsHead(num_classes=num_classes, in_channels=4)
