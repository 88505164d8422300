"""Soft-max cross-entropy over classes that are split across ranks (the full classifier's hybrid parallelism).

The backbone is data-parallel, the classifier is model-parallel: rank ``r`` holds the rows of classes
``[offset_r, offset_r + C_r)``. One step (Liu et al., "one-million-way instance classifier", Sec. 3):

1. ``gather.all_gather_rows_with_grad`` all-gathers the features of the global batch, ``(B_r, D) -> (B, D)``,
   and ``gather.all_gather_rows`` their labels;
2. each rank computes the logits of the whole batch for its own classes, ``(B, C_r)``;
3. :func:`sharded_cross_entropy` all-reduces the sum of exponentials (and the row-wise max, unless the logits
   have a known bound), so every rank knows the soft-max normaliser of every sample, and the loss of each
   sample's target classes;
4. backward: each rank's logit gradients stay local (its rows' gradients are exact and need no reduction);
   the feature gradients of all ranks are summed and sent back to the features' owner.

With one process (or no process group) these functions reduce to the ordinary single-process computation, so
every head uses this one path.
"""
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .gather import is_distributed

# exp(-40) = 4.2e-18 and exp(40) = 2.4e17 are normal float32 (1.2e-38 to 3.4e38), and a sum of up to 1e21 such
# terms stays finite: logits within a bound of at most 40 need no shift before their exponentials
MAX_LOGIT_BOUND = 40.0


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if autocast made it bfloat16 / float16; float32 and float64 stay as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class _ShardedCrossEntropy(torch.autograd.Function):
    """The loss from the log-sum-exp and the target logits; the soft-max itself is normalised only in the
    backward, where the gradient ``softmax - target`` is formed, so that each ``(B, C_r)`` pass is made once."""

    @staticmethod
    def forward(ctx, logits: Tensor, target_positions: Tensor, target_weights: Tensor, reduce: bool,
                logit_bound: Optional[float]) -> Tensor:
        # logits (B, C_r); target_positions (B, T): column of each target in this shard, -1 when elsewhere
        logits = logits.detach()
        if logit_bound is None:
            shift = logits.amax(dim=1, keepdim=True)  # (B, 1); amax, not max: no arg-max indices to form
            if reduce:
                dist.all_reduce(shift, op=dist.ReduceOp.MAX)
            exps = (logits - shift).exp_()  # (B, C_r), unnormalised
        else:  # within the bound no exponential overflows or underflows: no shift, no pass for it, no all-reduce
            shift = 0.0
            exps = logits.exp()  # (B, C_r), unnormalised
        sum_exp = exps.sum(dim=1)  # (B,)
        if reduce:
            dist.all_reduce(sum_exp)
        local = target_positions >= 0  # (B, T)
        columns = target_positions.clamp(min=0)
        log_probs = logits.gather(1, columns) - (sum_exp.log()[:, None] + shift)  # (B, T)
        per_sample = -(target_weights * log_probs * local).sum(dim=1)  # (B,)
        if reduce:
            dist.all_reduce(per_sample)  # each target class lives on exactly one rank
        ctx.save_for_backward(exps, sum_exp, columns, target_weights * local)
        return per_sample.mean()

    @staticmethod
    @torch.compiler.disable  # its shapes follow the classes of the step: eager under torch.compile
    def backward(ctx, grad_loss: Tensor):
        exps, sum_exp, columns, local_weights = ctx.saved_tensors
        grad_scale = grad_loss / exps.shape[0]  # d mean / d per_sample
        grad = exps * (grad_scale / sum_exp)[:, None]  # the soft-max, times the gradient of the mean: (B, C_r)
        grad.scatter_add_(1, columns, local_weights * -grad_scale)  # minus the target distribution
        return grad, None, None, None, None


def sharded_cross_entropy(logits: Tensor, target_positions: Tensor, target_weights: Tensor, sharded: bool,
                          logit_bound: Optional[float] = None) -> Tensor:
    """Mean cross-entropy of soft targets over classes sharded across ranks (paper Eq. 1 and Eq. 3).

    Sample ``i``'s target distribution puts ``target_weights[i, t]`` on class ``t``; only the columns of this
    rank's shard are given (``target_positions[i, t]``, or -1 where that class lives on another rank). One-hot
    targets are ``T = 1`` with weight 1; the top-k smoothing of the full classifier is ``T = 1 + k``.

    Args:
        logits (Tensor): ``(B, C_r)`` logits of the global batch for this rank's classes.
        target_positions (Tensor): ``(B, T)`` long columns in ``[0, C_r)``, or -1.
        target_weights (Tensor): ``(B, T)`` probability mass of each target (each row sums to 1 over ranks).
        sharded (bool): The classes are split across the ranks of the process group (reduce the soft-max
            statistics over ranks). False for a single process or a table replicated on every rank.
        logit_bound (float, optional): ``b`` with every logit at most ``b`` and, in each row, one at least ``-b``
            (``EMPTY_COLUMN_LOGIT`` columns may lie below): cosine logits have ``b = 1 / tau``. The exponentials
            are then taken of the logits themselves instead of their difference to each row's maximum (the
            log-sum-exp is the same), which saves the maxima's pass, the subtraction's pass and, when sharded,
            the all-reduce of the maxima. Used while ``b <= MAX_LOGIT_BOUND`` (``tau >= 0.025``), where no
            exponential or sum can overflow or underflow in float32; the maxima otherwise. Defaults to None (the
            maxima).

    Returns:
        Tensor: The scalar mean loss, identical on every rank.
    """
    logits = at_least_float32(logits)  # under autocast: the soft-max's shift, exponentials and sums in float32
    if logit_bound is not None and logit_bound > MAX_LOGIT_BOUND:
        logit_bound = None
    return _ShardedCrossEntropy.apply(logits, target_positions, target_weights.to(logits.dtype),
                                      sharded and is_distributed(), logit_bound)


def spread_over_ranks(values: Tensor, owned: Tensor) -> Tensor:
    """Give every rank the rows that only their owner rank knows: ``values[i]`` counts where ``owned[i]``.

    Args:
        values (Tensor): ``(B, ...)`` integer or float rows, meaningful where ``owned``.
        owned (Tensor): ``(B,)`` bool, true on exactly one rank for each row.

    Returns:
        Tensor: ``(B, ...)`` the owners' rows, on every rank.
    """
    mask = owned.reshape((-1, ) + (1, ) * (values.dim() - 1))
    spread = torch.where(mask, values, torch.zeros_like(values))
    if is_distributed():
        dist.all_reduce(spread)
    return spread
