import pytest
import torch
import torch.nn.functional as F

from float_bounds import assert_within, cosine_logit_error, cosine_softmax_gradient_bound, cross_entropy_error
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.utils import LazySGDRows


def cosine_logits(feats, rows, temperature):
    """The logits of PIC Eq. 1: cosine similarities of features and rows over the temperature, ``(B, C)``."""
    return (F.normalize(feats, dim=1) @ F.normalize(rows, dim=1).t()) / temperature


def cosine_softmax_loss(feats, rows, targets, temperature):
    """PIC Eq. 1 written out: cross-entropy of cosine similarities over the given rows."""
    return F.cross_entropy(cosine_logits(feats, rows, temperature), targets)


def make_wrapper(params, head, lr=0.1, weight_decay=1e-4):
    wrapper = LazyCorrectedSGD(optimizer=torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
    wrapper.register_rows(head)
    return wrapper


def float64_rows(head: InstanceClsHead) -> InstanceClsHead:
    """``head`` with float64 rows, so that comparisons with dense SGD check the update rule, not float32 rounding."""
    head.rows = LazySGDRows(head.num_classes, head.rows_cfg['dim'], dtype=torch.float64)
    return head


def test_full_softmax_loss_and_gradients_match_eq1():
    torch.manual_seed(0)
    num_classes, dim, temperature = 50, 8, 0.2
    head = InstanceClsHead(num_classes=num_classes, in_channels=dim, temperature=temperature)
    feats = torch.randn(6, dim, requires_grad=True)
    sample_idx = torch.tensor([3, 49, 0, 7, 7, 21])
    loss = head.loss(feats, sample_idx)['loss']
    rows = head.rows.handed_out.weight  # the leaf the loss was built from
    assert rows.shape == (num_classes, dim)
    assert torch.equal(head.rows.handed_out.local_indices, torch.arange(num_classes))  # the full soft-max
    # Eq. 1 in float64 on the same float32 inputs: the reference has no rounding worth counting, so the head's
    # float32 results must lie within float32's error bounds of it (tests/float_bounds.py), on any kernel.
    reference_rows = head.rows.weight.double().requires_grad_(True)
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
    """In the full mode every row is used every step, so the rows must follow plain SGD exactly.

    Both sides run in float64 (the head's rows too), so that the comparison checks the update rule and not
    float32 rounding: after 5 steps the two differ by float64 rounding (about 1e-16 of the gradients, which
    stay below 1e2 here), while a wrong rule (a missed weight-decay or momentum term) moves rows by over 1e-3.
    """
    torch.manual_seed(0)
    num_classes, dim = 40, 8
    head = float64_rows(InstanceClsHead(num_classes=num_classes, in_channels=dim))
    dense_rows = torch.nn.Parameter(head.rows.weight.clone())
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
    torch.testing.assert_close(head.rows.weight, dense_rows.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(feat_layer.weight, dense_layer.weight, rtol=0, atol=1e-10)


@pytest.mark.parametrize('negatives', ['full', 'recent'])
def test_one_step_without_an_optimiser_equals_one_dense_torch_sgd_step(negatives):
    """``loss -> backward -> head.rows.step(lr, m, wd)`` needs no optimiser, and is one step of torch.optim.SGD on
    the whole table (zero gradients for the rows the step did not use), in float64 as above."""
    torch.manual_seed(0)
    num_classes, dim, lr, momentum, weight_decay = 30, 8, 0.5, 0.9, 0.01
    head = float64_rows(InstanceClsHead(num_classes, dim, negatives=negatives, num_negatives=6))
    dense_rows = torch.nn.Parameter(head.rows.weight.clone())
    dense_optim = torch.optim.SGD([dense_rows], lr=lr, momentum=momentum, weight_decay=weight_decay)
    feats = torch.randn(5, dim, dtype=torch.float64, requires_grad=True)
    sample_idx = torch.tensor([4, 17, 0, 29, 17])
    loss = head.loss(feats, sample_idx)['loss']
    loss.backward()
    head.rows.step(lr, momentum, weight_decay)
    assert head.rows.handed_out is None and head.rows.num_steps == 1
    classes = torch.arange(num_classes) if negatives == 'full' else torch.unique(sample_idx)  # the FIFO is empty
    dense_feats = feats.detach().requires_grad_(True)
    dense_loss = cosine_softmax_loss(dense_feats, dense_rows[classes], torch.searchsorted(classes, sample_idx), 0.2)
    dense_loss.backward()
    dense_optim.step()
    # float64 rounding of row gradients up to about 1e2 (rows of norm 0.03 under a cosine loss) stays below 1e-12;
    # a missed weight-decay or momentum term would move rows by more than 1e-3
    torch.testing.assert_close(loss, dense_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(feats.grad, dense_feats.grad, rtol=0, atol=1e-12)
    assert head.rows.last_step.tolist() == [int(row in classes) for row in range(num_classes)]
    head.rows.bring_all_forward()  # the rows the step did not use: weight decay and momentum, as dense SGD
    torch.testing.assert_close(head.rows.weight, dense_rows.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(head.rows.momentum, dense_optim.state[dense_rows]['momentum_buffer'], rtol=0,
                               atol=1e-12)


def test_recent_negatives_use_the_batch_and_the_k_most_recent_positives():
    torch.manual_seed(0)
    head = InstanceClsHead(num_classes=100, in_channels=4, negatives='recent', num_negatives=6)
    batches = [torch.tensor([10, 11, 12]), torch.tensor([20, 21, 22]), torch.tensor([30, 31, 32])]
    seen = []
    for batch in batches:
        feats = torch.randn(3, 4)
        loss = head.loss(feats, batch)['loss']
        used = head.rows.handed_out
        live = used.local_indices >= 0  # slots without a class are out of the soft-max
        classes = used.local_indices[live]
        expected = torch.unique(torch.cat([batch, torch.tensor(seen[-6:], dtype=torch.long)]))
        assert torch.equal(classes.sort().values, expected) and len(used.local_indices) == 6 + 3  # K + B slots
        assert used.kept  # the rows stay in their slots for the next step
        rows = used.weight.detach().double()[live]  # Eq. 1 over exactly these rows (brought to this step), float64
        targets = (classes[:, None] == batch).long().argmax(0)  # (B,) each image's column among the classes
        reference = cosine_softmax_loss(feats.double(), rows, targets, 0.2).item()
        assert abs(loss.item() - reference) <= cross_entropy_error(cosine_logit_error(4, 0.2), len(classes),
                                                                   len(batch), reference)
        loss.backward()
        head.rows.step(lr=0.1, momentum=0.9, weight_decay=1e-4)
        seen.extend(batch.tolist())
    # the FIFO now holds the 6 most recent positives
    assert sorted(head.negatives.recent_indices.tolist()) == [20, 21, 22, 30, 31, 32]


def test_recent_mode_updates_only_the_rows_it_used():
    torch.manual_seed(0)
    head = InstanceClsHead(num_classes=100, in_channels=4, negatives='recent', num_negatives=8)
    wrapper = make_wrapper([torch.nn.Parameter(torch.zeros(1))], head)
    assert wrapper.row_sets == [head.rows]
    before = head.rows.weight.clone()
    wrapper.update_params(head.loss(torch.randn(3, 4), torch.tensor([5, 6, 7]))['loss'])
    changed = (head.rows.weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 6, 7]
    assert head.rows.last_step[[5, 6, 7]].tolist() == [1, 1, 1]
    assert int(head.rows.last_step.sum()) == 3
    assert head.rows.num_steps == 1


def test_a_second_loss_without_a_row_step_stops_with_the_fix():
    head = InstanceClsHead(num_classes=10, in_channels=4)
    head.loss(torch.randn(2, 4), torch.tensor([0, 1]))  # a loss needs no optimiser
    with pytest.raises(RuntimeError, match=r"never updated.*constructor='LazyCorrectedSGDConstructor'.*"
                       r"rows\.step\(\.\.\.\)"):
        head.loss(torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize('kwargs, match', [
    (dict(negatives='sampled'), "negatives='sampled'"),
    (dict(negatives='recent', num_negatives=11), 'num_negatives=11'),
    (dict(negatives='recent', num_negatives=0), 'num_negatives=0 must be positive'),
    (dict(negatives='recent', sharded=True), "negatives='recent' works with a replicated table.*sharded=True"),
    (dict(negatives='recent', label_smoothing=0.2), "negatives='recent' works with .*label_smoothing=0.2"),
    (dict(temperature=0.0), 'temperature=0.0'),
    (dict(label_smoothing=1.0), 'label_smoothing=1.0 must lie in'),
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
    assert head.num_hard_classes == 3
    hard_classes = head.targets.hard_classes
    assert hard_classes.shape == (10, 3) and (hard_classes == -1).all()  # one-hot until HardClassHook
    assert not any('hard_classes' in key for key in head.state_dict())  # HardClassHook searches again each run
    head.set_hard_classes(torch.arange(30).remainder(10).view(10, 3))
    assert head.targets.hard_classes[1].tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match=r'got hard classes of shape \(10, 2\) for \(10, 3\)'):
        head.set_hard_classes(torch.zeros(10, 2, dtype=torch.long))


def test_a_one_hot_head_has_no_hard_classes_to_set():
    head = InstanceClsHead(num_classes=10, in_channels=4)
    assert head.num_hard_classes is None
    with pytest.raises(ValueError, match=r'model\.head\.label_smoothing is 0: set it \(the paper uses 0\.2\), or '
                       'remove HardClassHook'):
        head.set_hard_classes(torch.zeros(10, 3, dtype=torch.long))


def train(head, steps, seed=1):
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        feats = torch.randn(4, 4, generator=generator)
        loss = head.loss(feats, torch.randperm(head.num_classes, generator=generator)[:4])['loss']
        loss.backward()
        head.rows.step(lr=0.1, momentum=0.9, weight_decay=1e-4)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize('negatives', ['full', 'recent'])
def test_the_state_dict_holds_the_rows_with_their_sgd_state_and_resumes_exactly(negatives):
    torch.manual_seed(0)
    head = InstanceClsHead(num_classes=20, in_channels=4, negatives=negatives, num_negatives=5)
    train(head, 3)
    state = head.state_dict()
    expected = {'rows.weight', 'rows.momentum', 'rows.last_step', 'rows.transitions'}
    if negatives == 'recent':
        expected |= {'negatives.recent_indices', 'negatives.recent_head'}
    assert set(state) == expected
    assert state['rows.transitions'].shape == (3, 2, 2)
    torch.manual_seed(123)  # a fresh process: other initial rows
    resumed = InstanceClsHead(num_classes=20, in_channels=4, negatives=negatives, num_negatives=5)
    resumed.load_state_dict(state)
    assert train(resumed, 2, seed=2) == train(head, 2, seed=2)
    for key, tensor in head.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], tensor), key


@pytest.mark.parametrize('kwargs, match', [
    (dict(negatives='recent', num_negatives=11),
     r'num_negatives=11 must lie in \[1, num_classes=10\]: lower model.head.num_negatives'),
    (dict(label_smoothing=0.2, num_hard_classes=10),
     r'num_hard_classes=10 must lie in \[1, num_classes - 1 = 9\]: lower model.head.num_hard_classes'),
])
def test_an_auto_sized_head_checks_what_depends_on_the_size_when_it_gets_it(kwargs, match):
    head = InstanceClsHead(num_classes='auto', in_channels=4, **kwargs)
    assert head.rows is None
    with pytest.raises(RuntimeError, match=r"num_classes='auto' and no rows yet.*call allocate_rows\(N\) first"):
        head.loss(torch.randn(1, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match=match):
        head.allocate_rows(10)
    head.allocate_rows(12)
    assert head.rows.weight.shape == (12, 4) and head.num_classes == 12
    if head.label_smoothing:
        assert head.targets.hard_classes.shape == (12, 10)  # one-hot until HardClassHook


@pytest.mark.parametrize('num_classes', ['Auto', 0, 2.5])
def test_a_num_classes_that_is_neither_a_size_nor_auto_is_refused(num_classes):
    with pytest.raises(ValueError, match=f"got num_rows={num_classes!r}, .* or to 'auto'"):
        InstanceClsHead(num_classes=num_classes, in_channels=4)


def multi_crop_problem(num_classes=30, dim=8, num_small=3):
    """A batch of 4 images: their large crops' features and ``num_small`` small crops' each, in float64."""
    generator = torch.Generator().manual_seed(2)
    sample_idx = torch.tensor([4, 17, 0, 29])
    feats = torch.randn(4, dim, generator=generator, dtype=torch.float64)
    small = torch.randn(num_small * 4, dim, generator=generator, dtype=torch.float64)
    return sample_idx, feats, small, sample_idx.repeat(num_small)


@pytest.mark.parametrize('negatives', ['full', 'recent'])
def test_detached_views_are_scored_against_the_step_rows_and_give_them_no_gradient(negatives):
    """The PIC release's multi-crop loss: one cross-entropy over the large and the small crops' logits, the small
    ones against the step's rows detached; in float64, so that the comparison checks the formula."""
    torch.manual_seed(0)
    head = float64_rows(InstanceClsHead(30, 8, negatives=negatives, num_negatives=6))
    sample_idx, feats, small, small_idx = multi_crop_problem()
    feats.requires_grad_(True), small.requires_grad_(True)
    loss = head.loss(feats, sample_idx, detached_feats=small, detached_sample_idx=small_idx)['loss']
    loss.backward()
    used = head.rows.handed_out
    # the large crops' classes (the small ones add none): every row, or the batch's slots after the empty FIFO's
    classes = torch.arange(30) if negatives == 'full' else torch.cat([torch.full((6, ), -1), sample_idx])
    assert torch.equal(used.local_indices, classes)
    live = classes >= 0

    rows = used.weight.detach()[live].clone().requires_grad_(True)
    reference_feats, reference_small = feats.detach().requires_grad_(True), small.detach().requires_grad_(True)
    targets = torch.searchsorted(classes[live], sample_idx) if negatives == 'full' else torch.arange(4)
    logits = torch.cat([cosine_logits(reference_feats, rows, 0.2), cosine_logits(reference_small, rows.detach(), 0.2)])
    reference = F.cross_entropy(logits, targets.repeat(4))  # the mean over all 16 crops, as the release
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(feats.grad, reference_feats.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(small.grad, reference_small.grad, rtol=0, atol=1e-12)
    assert small.grad.abs().min() > 0  # every small crop is trained
    torch.testing.assert_close(used.weight.grad[live], rows.grad, rtol=0, atol=1e-12)
    assert not used.weight.grad[~live].any()  # the empty slots' rows get nothing
    # the rows' gradient is the large crops' alone, at their share 4 / 16 of the samples
    large_only = used.weight.detach()[live].clone().requires_grad_(True)
    (cosine_softmax_loss(feats.detach(), large_only, targets, 0.2) * 4 / 16).backward()
    torch.testing.assert_close(used.weight.grad[live], large_only.grad, rtol=0, atol=1e-12)


def multi_crop_steps(small_feats, steps=2, loss_scale=1.):
    """``steps`` LazyCorrectedSGD steps of a recent-negative head on the same large crops, with the given small
    crops' features (None: the large crops alone, their loss times ``loss_scale``); rows, FIFO and step count."""
    torch.manual_seed(0)
    head = float64_rows(InstanceClsHead(30, 8, negatives='recent', num_negatives=6))
    wrapper = make_wrapper([torch.nn.Parameter(torch.zeros(1))], head, lr=0.5, weight_decay=0.01)
    generator = torch.Generator().manual_seed(3)
    for step in range(steps):
        sample_idx = torch.randperm(30, generator=generator)[:4]
        feats = torch.randn(4, 8, generator=generator, dtype=torch.float64)
        if small_feats is None:
            loss = head.loss(feats, sample_idx)['loss'] * loss_scale
        else:
            loss = head.loss(feats, sample_idx, small_feats[step], sample_idx.repeat(3))['loss']
        wrapper.update_params(loss)
        assert head.rows.num_steps == step + 1 and head.rows.handed_out is None  # one row update per step
    return head.rows.weight.clone(), head.rows.last_step.clone(), head.negatives.recent_indices.clone()


def test_detached_views_take_no_row_update_and_no_fifo_entry_of_their_own():
    generator = torch.Generator().manual_seed(4)
    small_a, small_b = torch.randn(2, 2, 12, 8, generator=generator, dtype=torch.float64)
    rows_a, last_step_a, recent_a = multi_crop_steps(small_a)
    rows_b, last_step_b, recent_b = multi_crop_steps(small_b)
    assert torch.equal(rows_a, rows_b)  # whatever the small crops are, the rows move alike
    rows_large, last_step_large, recent_large = multi_crop_steps(None, loss_scale=4 / 16)
    torch.testing.assert_close(rows_a, rows_large, rtol=0, atol=1e-12)  # as the large crops' (scaled) loss alone
    assert torch.equal(last_step_a, last_step_large) and torch.equal(last_step_a, last_step_b)
    assert torch.equal(recent_a, recent_large) and torch.equal(recent_a, recent_b)  # 8 entries, not 32


def test_detached_views_need_their_labels_and_rows_of_the_step():
    head = InstanceClsHead(num_classes=30, in_channels=4, negatives='recent', num_negatives=6)
    with pytest.raises(ValueError, match='detached_feats and detached_sample_idx go together'):
        head.loss(torch.randn(2, 4), torch.tensor([0, 1]), detached_feats=torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"instance 7 of the detached views is not among the classes of this step: "
                       r"with negatives='recent' a detached view must be another view of an image of the batch"):
        head.loss(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(2, 4), torch.tensor([1, 7]))
    assert head.rows.handed_out is None  # refused before any row was handed out
