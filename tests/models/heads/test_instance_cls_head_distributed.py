"""The hybrid-parallel head (rows sharded over gloo ranks) against the single-process head."""
import pytest
import torch
import torch.nn.functional as F

from distributed import run_distributed
from float_bounds import assert_within, cosine_logit_error, cosine_softmax_gradient_bound, cross_entropy_error
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.utils import LazySGDRows

NUM_CLASSES, DIM, HARD = 37, 8, 3
BATCH_PER_RANK = [3, 2, 4, 3]  # uneven batches: the gather pads them


def problem(world_size):
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(NUM_CLASSES, DIM, generator=generator)
    batch = sum(BATCH_PER_RANK[:world_size])
    feats = torch.randn(batch, DIM, generator=generator)
    sample_idx = torch.randperm(NUM_CLASSES, generator=generator)[:batch]
    hard = torch.stack([torch.randperm(NUM_CLASSES, generator=generator)[:HARD] for _ in range(NUM_CLASSES)])
    hard[hard == torch.arange(NUM_CLASSES)[:, None]] = -1  # some unknown hard classes
    return rows, feats, sample_idx, hard


def head_step(head, rows, hard, feats, sample_idx):
    """Loss, feature gradient and row gradient of one step; ``rows`` / ``hard`` are this head's shard."""
    head.rows.weight.copy_(rows)
    if head.label_smoothing:
        head.set_hard_classes(hard)
    feats = feats.clone().requires_grad_(True)
    loss = head.loss(feats, sample_idx)['loss']  # no optimiser: the gradient of the handed-out rows is the result
    loss.backward()
    return loss.detach(), feats.grad, head.rows.handed_out.weight.grad


def sharded_rank(rank, world_size, smoothing):
    rows, feats, sample_idx, hard = problem(world_size)
    head = InstanceClsHead(NUM_CLASSES, DIM, sharded=True, label_smoothing=smoothing, num_hard_classes=HARD)
    shard = slice(head.rows.row_offset, head.rows.row_offset + head.rows.num_local_rows)
    start = sum(BATCH_PER_RANK[:rank])
    batch = slice(start, start + BATCH_PER_RANK[rank])
    return (shard, batch) + head_step(head, rows[shard], hard[shard], feats[batch], sample_idx[batch])


def float64_head(head: InstanceClsHead) -> InstanceClsHead:
    """``head`` with float64 rows: the single-process reference, free of float32 rounding."""
    head.rows = LazySGDRows(NUM_CLASSES, DIM, dtype=torch.float64)
    return head


def gradient_coefficients(rows, feats, sample_idx, hard, smoothing):
    """``(B, C)`` upper bounds of ``|dL/dlogits|``: (probability + 1 on every target class) / B, in float64."""
    logits = F.normalize(feats.double(), dim=1) @ F.normalize(rows.double(), dim=1).t() / 0.2
    targets = F.one_hot(sample_idx, NUM_CLASSES).double()
    if smoothing:
        for sample, instance in enumerate(sample_idx.tolist()):
            known = hard[instance][hard[instance] >= 0]
            targets[sample, known] = 1.
    return (logits.softmax(dim=1) + targets) / len(sample_idx)


@pytest.mark.parametrize('world_size', [2, 4])
@pytest.mark.parametrize('smoothing', [0.0, 0.2])
def test_sharded_head_equals_the_single_process_head(world_size, smoothing):
    rows, feats, sample_idx, hard = problem(world_size)
    single = float64_head(InstanceClsHead(NUM_CLASSES, DIM, label_smoothing=smoothing, num_hard_classes=HARD))
    loss, feat_grad, row_grad = head_step(single, rows.double(), hard, feats.double(), sample_idx)
    # the sharded float32 results lie within float32's error bounds of the float64 single-process ones; each rank
    # computes a share of every feature gradient, added up by an all-reduce (world_size more roundings)
    logit_error = cosine_logit_error(DIM, 0.2)
    loss_bound = cross_entropy_error(logit_error, NUM_CLASSES, len(sample_idx), loss.item())
    coefficients = gradient_coefficients(rows, feats, sample_idx, hard, smoothing)  # (B, C)
    feat_bound = cosine_softmax_gradient_bound(feats, rows, coefficients, 0.2, logit_error, world_size)
    row_bound = cosine_softmax_gradient_bound(rows, feats, coefficients.t(), 0.2, logit_error)
    covered = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    ranks = run_distributed(sharded_rank, world_size, smoothing)
    for shard, batch, rank_loss, rank_feat_grad, rank_row_grad in ranks:
        assert abs(rank_loss.item() - loss.item()) <= loss_bound
        # DDP averages backbone gradients over ranks, so each rank's features carry world_size x the share (a
        # power of two: dividing by it is exact)
        assert_within(rank_feat_grad / world_size, feat_grad[batch], feat_bound[batch], 'feature gradient')
        assert_within(rank_row_grad, row_grad[shard], row_bound[shard], 'row gradient')
        covered[shard] = True
    assert covered.all()
    assert row_grad.abs().sum() > 0 and feat_grad.abs().sum() > 0


def test_smoothing_changes_the_loss():
    rows, feats, sample_idx, hard = problem(2)
    plain = head_step(InstanceClsHead(NUM_CLASSES, DIM), rows, hard, feats, sample_idx)[0]
    smoothed = head_step(InstanceClsHead(NUM_CLASSES, DIM, label_smoothing=0.2, num_hard_classes=HARD), rows, hard,
                         feats, sample_idx)[0]
    assert abs(plain.item() - smoothed.item()) > 1e-3


def recent_mode_steps(world_size, rank=None):
    """Three LazyCorrectedSGD steps of data-parallel PIC with recent negatives over a global batch.

    With ``rank`` the step sees that rank's share of the batch (every rank holds all rows); without it, one
    process sees the whole global batch.
    """
    torch.manual_seed(0)
    # float64 rows and features: the comparison checks the data flow, not how float32 sums a gradient average
    head = float64_head(InstanceClsHead(NUM_CLASSES, DIM, negatives='recent', num_negatives=6))
    wrapper = LazyCorrectedSGD(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5, momentum=0.9,
                                               weight_decay=0.01))
    wrapper.register_rows(head)
    generator = torch.Generator().manual_seed(1)
    share = slice(None) if rank is None else slice(4 * rank, 4 * rank + 4)
    for _ in range(3):
        feats = torch.randn(4 * world_size, DIM, generator=generator, dtype=torch.float64)
        sample_idx = torch.randperm(NUM_CLASSES, generator=generator)[:4 * world_size]
        wrapper.update_params(head.loss(feats[share], sample_idx[share])['loss'])
    return head.rows.weight.clone(), head.negatives.recent_indices.clone()


def replicated_recent_rank(rank, world_size):
    return recent_mode_steps(world_size, rank)


def test_replicated_recent_mode_matches_the_single_process_global_batch():
    rows, recent = recent_mode_steps(world_size=2)
    for rank_rows, rank_recent in run_distributed(replicated_recent_rank, 2):
        torch.testing.assert_close(rank_rows, rows, rtol=0, atol=1e-12)
        assert torch.equal(rank_recent, recent)


def auto_sized_shard(rank, world_size):
    """What InstanceCountCheckHook gives a sharded head built with num_classes='auto' on this rank."""
    torch.manual_seed(0)  # the runner seeds every rank alike
    head = InstanceClsHead('auto', DIM, sharded=True, label_smoothing=0.2, num_hard_classes=HARD)
    head.allocate_rows(NUM_CLASSES)
    return head.rows.row_offset, head.rows.weight, tuple(head.targets.hard_classes.shape)


def test_an_auto_sized_sharded_head_gets_its_shard_of_the_rows_a_single_process_draws():
    torch.manual_seed(0)
    single = InstanceClsHead(NUM_CLASSES, DIM).rows.weight
    ranks = run_distributed(auto_sized_shard, 2)
    assert [offset for offset, _, _ in ranks] == [0, 19] and [shape for _, _, shape in ranks] == [(19, HARD),
                                                                                                  (18, HARD)]
    assert torch.equal(torch.cat([weight for _, weight, _ in ranks]), single)


def multi_crop_step(head, rows, hard, feats, sample_idx, small):
    """``head_step`` with 2 small crops per image scored detached: loss, large and small feature and row gradients."""
    head.rows.weight.copy_(rows)
    head.set_hard_classes(hard)
    feats, small = feats.clone().requires_grad_(True), small.clone().requires_grad_(True)
    loss = head.loss(feats, sample_idx, detached_feats=small, detached_sample_idx=sample_idx.repeat(2))['loss']
    loss.backward()
    return loss.detach(), feats.grad, small.grad.view(2, -1, DIM), head.rows.handed_out.weight.grad


def multi_crop_problem(world_size, batch=slice(None)):
    """``problem`` plus 2 small crops per image, in float64, for the images of ``batch``."""
    rows, feats, sample_idx, hard = problem(world_size)
    small = torch.randn(2, len(sample_idx), DIM, generator=torch.Generator().manual_seed(5))  # (2, B, D)
    return rows.double(), feats.double()[batch], sample_idx[batch], hard, small.double()[:, batch].flatten(0, 1)


def rank_batch(rank):
    start = sum(BATCH_PER_RANK[:rank])
    return slice(start, start + BATCH_PER_RANK[rank])


def sharded_multi_crop_rank(rank, world_size):
    rows, feats, sample_idx, hard, small = multi_crop_problem(world_size, rank_batch(rank))
    head = InstanceClsHead(NUM_CLASSES, DIM, sharded=True, label_smoothing=0.2, num_hard_classes=HARD)
    head.rows = LazySGDRows(NUM_CLASSES, DIM, sharded=True, dtype=torch.float64)  # float64: checks the data flow
    shard = slice(head.rows.row_offset, head.rows.row_offset + head.rows.num_local_rows)
    return (shard, ) + multi_crop_step(head, rows[shard], hard[shard], feats, sample_idx, small)


def test_sharded_head_scores_detached_views_as_the_single_process_head():
    rows, feats, sample_idx, hard, small = multi_crop_problem(2)
    single = float64_head(InstanceClsHead(NUM_CLASSES, DIM, label_smoothing=0.2, num_hard_classes=HARD))
    loss, feat_grad, small_grad, row_grad = multi_crop_step(single, rows, hard, feats, sample_idx, small)
    assert small_grad.abs().sum() > 0
    covered = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    for rank, (shard, rank_loss, rank_feat_grad, rank_small_grad, rank_row_grad) in enumerate(
            run_distributed(sharded_multi_crop_rank, 2)):
        batch = rank_batch(rank)
        torch.testing.assert_close(rank_loss, loss, rtol=0, atol=1e-12)
        # each rank's features carry world_size x their share (DDP averages the backbone's gradients)
        torch.testing.assert_close(rank_feat_grad / 2, feat_grad[batch], rtol=0, atol=1e-12)
        torch.testing.assert_close(rank_small_grad / 2, small_grad[:, batch], rtol=0, atol=1e-12)
        torch.testing.assert_close(rank_row_grad, row_grad[shard], rtol=0, atol=1e-12)
        covered[shard] = True
    assert covered.all()
