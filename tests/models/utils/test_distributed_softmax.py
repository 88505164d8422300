import math

import pytest
import torch
import torch.distributed as dist

from pic_plugin.models.utils import distributed_softmax
from pic_plugin.models.utils.distributed_softmax import MAX_LOGIT_BOUND, sharded_cross_entropy


def smoothed_targets(batch_size: int, num_classes: int, generator: torch.Generator):
    """``(B, 3)`` target columns (the instance and two hard classes) with weights 0.8, 0.1, 0.1."""
    columns = torch.stack([torch.randperm(num_classes, generator=generator)[:3] for _ in range(batch_size)])
    weights = torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64).expand(batch_size, 3)
    return columns, weights


def loss_and_gradient(logits: torch.Tensor, columns, weights, logit_bound):
    logits = logits.clone().requires_grad_(True)
    loss = sharded_cross_entropy(logits, columns, weights, sharded=False, logit_bound=logit_bound)
    loss.backward()
    return loss.detach(), logits.grad


def test_the_unshifted_logits_within_their_bound_give_the_loss_and_gradient_of_the_row_maxima():
    generator = torch.Generator().manual_seed(0)
    temperature = 0.2
    logits = (torch.rand(6, 40, generator=generator, dtype=torch.float64) * 2 - 1) / temperature  # cos / tau
    columns, weights = smoothed_targets(6, 40, generator)
    bounded = loss_and_gradient(logits, columns, weights, 1 / temperature)
    by_maxima = loss_and_gradient(logits, columns, weights, None)
    reference = -(weights * logits.log_softmax(dim=1).gather(1, columns)).sum(dim=1).mean()  # paper Eq. 3
    torch.testing.assert_close(bounded[0], reference, rtol=1e-13, atol=0)
    torch.testing.assert_close(bounded[0], by_maxima[0], rtol=1e-13, atol=0)
    torch.testing.assert_close(bounded[1], by_maxima[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize('sign', [-1, 1])
@pytest.mark.parametrize('bound', [MAX_LOGIT_BOUND, 1 / 0.01])
def test_float32_logits_at_either_end_of_their_bound_give_the_loss(bound, sign):
    # every logit at -b or +b: unshifted, each exponential is exp(-b) or exp(b); above MAX_LOGIT_BOUND the first is
    # subnormal in float32 and the second overflows, and the loss is right only because the row maxima are used there
    logits = torch.full((4, 50), sign * bound)
    columns = torch.arange(4)[:, None]
    loss, grad = loss_and_gradient(logits, columns, torch.ones(4, 1), bound)
    assert math.isclose(float(loss), math.log(50), rel_tol=1e-6)  # the uniform soft-max
    assert torch.isfinite(grad).all()


def test_a_sharded_loss_with_a_logits_bound_all_reduces_no_maxima(monkeypatch):
    operations = []
    monkeypatch.setattr(distributed_softmax, 'is_distributed', lambda: True)
    monkeypatch.setattr(dist, 'all_reduce', lambda tensor, op=dist.ReduceOp.SUM: operations.append(op))
    logits, columns, weights = torch.randn(4, 10), torch.arange(4)[:, None], torch.ones(4, 1)
    sharded_cross_entropy(logits, columns, weights, sharded=True, logit_bound=5.0)
    assert operations == [dist.ReduceOp.SUM, dist.ReduceOp.SUM]  # the sums of exponentials, the per-sample loss
    operations.clear()
    sharded_cross_entropy(logits, columns, weights, sharded=True)
    assert operations == [dist.ReduceOp.MAX, dist.ReduceOp.SUM, dist.ReduceOp.SUM]
