"""The hybrid-parallel head (rows sharded over gloo ranks) against the single-process head."""
import pytest
import torch

from distributed import run_distributed
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead

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
    head.table.weight.copy_(rows)
    if head.label_smoothing:
        head.hard_classes.copy_(hard)
    LazyCorrectedSGD(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)).attach(head)
    feats = feats.clone().requires_grad_(True)
    loss = head.loss(feats, sample_idx)['loss']
    loss.backward()
    return loss.detach(), feats.grad, head.table.pending.weight.grad


def sharded_rank(rank, world_size, smoothing):
    rows, feats, sample_idx, hard = problem(world_size)
    head = InstanceClsHead(NUM_CLASSES, DIM, sharded=True, label_smoothing=smoothing, num_hard_classes=HARD)
    shard = slice(head.table.row_offset, head.table.row_offset + head.table.num_local_rows)
    start = sum(BATCH_PER_RANK[:rank])
    batch = slice(start, start + BATCH_PER_RANK[rank])
    return (shard, batch) + head_step(head, rows[shard], hard[shard], feats[batch], sample_idx[batch])


@pytest.mark.parametrize('world_size', [2, 4])
@pytest.mark.parametrize('smoothing', [0.0, 0.2])
def test_sharded_head_equals_the_single_process_head(world_size, smoothing):
    rows, feats, sample_idx, hard = problem(world_size)
    single = InstanceClsHead(NUM_CLASSES, DIM, label_smoothing=smoothing, num_hard_classes=HARD)
    loss, feat_grad, row_grad = head_step(single, rows, hard, feats, sample_idx)
    covered = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    for shard, batch, rank_loss, rank_feat_grad, rank_row_grad in run_distributed(sharded_rank, world_size,
                                                                                    smoothing):
        assert rank_loss.item() == pytest.approx(loss.item(), abs=1e-5)
        # DDP averages backbone gradients over ranks, so each rank's features carry world_size x the share
        assert torch.allclose(rank_feat_grad, feat_grad[batch] * world_size, atol=1e-5)
        assert torch.allclose(rank_row_grad, row_grad[shard], atol=1e-5)
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
    head = InstanceClsHead(NUM_CLASSES, DIM, negatives='recent', num_negatives=6)
    wrapper = LazyCorrectedSGD(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5, momentum=0.9,
                                               weight_decay=0.01))
    wrapper.attach(head)
    generator = torch.Generator().manual_seed(1)
    share = slice(None) if rank is None else slice(4 * rank, 4 * rank + 4)
    for _ in range(3):
        feats = torch.randn(4 * world_size, DIM, generator=generator)
        sample_idx = torch.randperm(NUM_CLASSES, generator=generator)[:4 * world_size]
        wrapper.update_params(head.loss(feats[share], sample_idx[share])['loss'])
    return head.table.weight.clone(), head.recent_indices.clone()


def replicated_recent_rank(rank, world_size):
    return recent_mode_steps(world_size, rank)


def test_replicated_recent_mode_matches_the_single_process_global_batch():
    rows, recent = recent_mode_steps(world_size=2)
    for rank_rows, rank_recent in run_distributed(replicated_recent_rank, 2):
        assert torch.allclose(rank_rows, rows, atol=1e-6)
        assert torch.equal(rank_recent, recent)
