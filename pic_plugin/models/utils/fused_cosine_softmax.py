"""The cosine soft-max cross-entropy as one autograd function, its ``(B, C)`` passes compiled into two kernels.

``cosine_logits`` followed by ``sharded_cross_entropy`` makes eleven element-wise passes over the ``(B, C)``
logits per step besides the three matrix products (the column scales, the exponentials, their sums, the soft-max
gradient, the column scales again, the radial sums), each at the memory's speed. Here the loss of PIC Eq. 1 (and
the full classifier's Eq. 3, sharded) is one function whose element-wise work ``torch.compile`` fuses into one
kernel forward (``logit = z_hat . w_c * s_c + offset_c`` and each row's sum of exponentials, reading the product
once) and one backward (the soft-max gradient recomputed from the logits, scaled by the columns' inverse norms,
and its column sums against the logits, reading the logits once); only the logits are kept for the backward. The
targets' part of the gradient, ``B x T`` entries, is applied sparsely.
"""
import os
from typing import Optional, Tuple, Type

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .gather import is_distributed

# The kernels' vector width in bits for ATEN_CPU_CAPABILITY (1 matches no vector ISA: scalar code), the choice
# inductor makes from that variable itself, given as an option: torch 2.14's compile cache does not key on the
# variable, so a kernel compiled under one capability would be reused, and built wrong, under another
VECTOR_BITS = {'default': 1, 'avx2': 256, 'avx512': 512}
CAPABILITY = os.environ.get('ATEN_CPU_CAPABILITY', '').lower()
COMPILE_OPTIONS = {'cpp.simdlen': VECTOR_BITS[CAPABILITY]} if CAPABILITY in VECTOR_BITS else None


def apply_cosine(function: Type[torch.autograd.Function], feats: Tensor, weight: Tensor, *args) -> Tensor:
    """``function.apply(z_hat, weight, *args)`` with the features normalised; under autocast both operands in the
    autocast type and the function run outside autocast (its products in that type, the rest as it chooses)."""
    unit_feats = F.normalize(feats, dim=1)
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return function.apply(unit_feats.to(dtype), weight.to(dtype), *args)
    return function.apply(unit_feats, weight, *args)


@torch.compile(dynamic=True, options=COMPILE_OPTIONS)
def _logits_and_sums(product: Tensor, scales: Tensor, offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """``(B, C)`` logits ``product * scales + offsets`` in float32 (at least) and their rows' sums of exponentials
    ``(B,)``: unshifted, as the logits lie within ``MAX_LOGIT_BOUND``."""
    logits = product.to(scales.dtype) * scales + offsets
    return logits, logits.exp().sum(dim=1)


@torch.compile(dynamic=True, options=COMPILE_OPTIONS)
def _scaled_softmax_gradient(logits: Tensor, row_factors: Tensor, scales: Tensor,
                             trained: Tensor) -> Tuple[Tensor, Tensor]:
    """The soft-max part of the logits' gradient, ``g_bc = f_b exp(logit_bc)``, times the column scales ``s_c``
    ``(B, C)``, and its column sums ``sum_b g_bc logit_bc`` over the ``trained`` rows ``(C,)``."""
    grad = logits.exp() * row_factors[:, None]
    return grad * scales, (grad * logits * trained[:, None]).sum(dim=0)


class _CosineSoftmaxCrossEntropy(torch.autograd.Function):
    """Loss and gradients of the cosine soft-max over classes that may be split across ranks."""

    @staticmethod
    def forward(ctx, unit_feats: Tensor, weight: Tensor, num_trained: int, temperature: float,
                offsets: Tensor, target_positions: Tensor, target_weights: Tensor, reduce: bool) -> Tensor:
        scales = weight.norm(dim=1, dtype=torch.promote_types(weight.dtype, torch.float32))
        scales = scales.clamp_min(1e-12).reciprocal() / temperature  # (C,), F.normalize's eps
        logits, sum_exp = _logits_and_sums(unit_feats @ weight.t(), scales, offsets)  # (B, C), (B,)
        if reduce:
            dist.all_reduce(sum_exp)
        local = target_positions >= 0  # (B, T): the target's class lives in this rank's shard
        columns = target_positions.clamp(min=0)
        log_probs = logits.gather(1, columns) - sum_exp.log()[:, None]  # (B, T)
        local_weights = target_weights.to(logits.dtype) * local
        per_sample = -(local_weights * log_probs).sum(dim=1)  # (B,)
        if reduce:
            dist.all_reduce(per_sample)  # each target class lives on exactly one rank
        ctx.save_for_backward(unit_feats, weight, scales, logits, sum_exp, columns, local_weights)
        ctx.num_trained, ctx.temperature = num_trained, temperature
        return per_sample.mean()

    @staticmethod
    @torch.compiler.disable  # its shapes follow the classes of the step: eager under torch.compile
    def backward(ctx, grad_loss: Tensor):
        unit_feats, weight, scales, logits, sum_exp, columns, local_weights = ctx.saved_tensors
        num_trained = ctx.num_trained
        grad_scale = grad_loss / logits.shape[0]  # d mean / d per_sample
        trained = (torch.arange(logits.shape[0], device=logits.device) < num_trained).to(logits.dtype)  # (B,)
        scaled, radial = _scaled_softmax_gradient(logits, grad_scale / sum_exp, scales, trained)
        target_grad = local_weights * -grad_scale  # (B, T): minus the target distribution, times d mean
        scaled.scatter_add_(1, columns, target_grad * scales[columns])
        radial.index_add_(0, columns[:num_trained].flatten(),
                          (target_grad * logits.gather(1, columns))[:num_trained].flatten())
        scaled = scaled.to(weight.dtype)  # (B, C): the logits' gradient times the columns' inverse norms
        grad_feats = scaled @ weight  # (B, D)
        if not ctx.needs_input_grad[1]:
            return grad_feats, None, None, None, None, None, None, None
        # d logit_bc / d w_c = z_hat_b * s_c - logit_bc * w_c / |w_c|^2, and 1 / |w_c|^2 = (s_c tau)^2
        radial = radial * (scales * ctx.temperature).square()  # (C,)
        grad_weight = (scaled[:num_trained].t() @ unit_feats[:num_trained]).addcmul_(
            weight, radial[:, None].to(weight.dtype), value=-1)
        return grad_feats, grad_weight, None, None, None, None, None, None


def fused_cosine_cross_entropy(feats: Tensor, weight: Tensor, temperature: float, offsets: Optional[Tensor],
                               target_positions: Tensor, target_weights: Tensor, sharded: bool,
                               num_trained: Optional[int] = None) -> Tensor:
    """Mean cross-entropy of the cosine soft-max ``cos(z_b, w_c) / tau`` (PIC Eq. 1; with soft targets and
    classes sharded over ranks, the full classifier's Eq. 3): ``cosine_logits`` and ``sharded_cross_entropy`` in
    one function, with the same loss and gradients up to rounding.

    Args:
        feats (Tensor): ``(B, D)`` features, not normalised.
        weight (Tensor): ``(C, D)`` the step's rows, not normalised.
        temperature (float): ``tau``, at least ``1 / MAX_LOGIT_BOUND`` (``distributed_softmax``): the
            exponentials are taken unshifted.
        offsets (Tensor, optional): ``(C,)`` float32 added to every row of logits (``EMPTY_COLUMN_LOGIT`` takes a
            column out of the soft-max). Defaults to none.
        target_positions (Tensor): ``(B, T)`` long columns in ``[0, C)``, or -1 where a class lives elsewhere.
        target_weights (Tensor): ``(B, T)`` probability mass of each target.
        sharded (bool): Reduce the soft-max statistics over the ranks.
        num_trained (int, optional): Only the first ``num_trained`` features train ``weight`` (the others,
            multi-crop's small crops, are scored against the rows detached). Defaults to all.

    Returns:
        Tensor: The scalar mean loss over the ``B`` samples, identical on every rank.
    """
    scale_dtype = torch.promote_types(weight.dtype, torch.float32)
    if offsets is None:
        offsets = torch.zeros(weight.shape[0], dtype=scale_dtype, device=weight.device)
    return apply_cosine(_CosineSoftmaxCrossEntropy, feats, weight, feats.shape[0] if num_trained is None else
                        num_trained, temperature, offsets.to(scale_dtype), target_positions, target_weights,
                        sharded and is_distributed())
