"""The heads under bfloat16 autocast (``LazyCorrectedSGD(dtype='bfloat16')``): float32 losses, float32 rows.

Under ``torch.autocast('cpu', dtype=torch.bfloat16)`` the products of features and rows (``mm``, ``bmm``) run in
bfloat16; everything else must stay float32: the loss (the soft-max's max, exponentials and sums), the rows, their
momentum and their gradient, and the NCE normaliser (float64).

Tolerance. bfloat16 keeps 8 significant bits, so its unit roundoff is ``u = 2^-8`` (float32's is ``2^-24``).
Each logit is ``cos(a, b) / tau`` of float32-normalised vectors: their elements are rounded to bfloat16 (one
rounding each), the ``D`` products are summed (at most ``D - 1`` roundings, if a kernel accumulated in
bfloat16; oneDNN accumulates in float32, but the bound should not depend on the kernel), the result is stored in
bfloat16 (one) and divided by ``tau`` (one, in bfloat16 or float32). The terms of the sum add up to at most 1
in magnitude (Cauchy-Schwarz), so by Higham's bound a logit errs by at most ``gamma_{D+4}(2^-8) / tau``, plus
float32's own error (``cosine_logit_error``). Every loss below depends on each logit with a slope of at most
1 in magnitude (cross-entropy: ``2 e`` in all, see ``float_bounds.cross_entropy_error``; NCE: each of its
``1 + m`` terms per sample), which gives the bounds: with ``D = 4`` a logit errs by at most 0.16 at
``tau = 0.2`` (a cross-entropy by 0.32, on losses of 4 to 8) and 0.065 at ``tau = 0.5``. They are worst cases:
the errors seen here are 70 to several thousand times smaller, while a loss computed from other rows or with
another temperature is off by the order of the loss itself.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from float_bounds import cosine_logit_error, cross_entropy_error, gamma
from pic_plugin.models.heads import InstanceClsHead, MemoryBankNCE
from pic_plugin.models.heads.instance_cls_head import cosine_logits

BF16_UNIT_ROUNDOFF = 2.0**-8  # 8 significant bits (7 stored)
NUM_CLASSES, DIM, BATCH = 50, 4, 6


def gamma_bf16(num_roundings: int) -> float:
    """Higham's ``gamma_n`` for bfloat16: ``n u / (1 - n u)`` with ``u = 2^-8``."""
    product = num_roundings * BF16_UNIT_ROUNDOFF
    return product / (1 - product)


def bf16_logit_error(dim: int, temperature: float) -> float:
    """Absolute error of one logit ``cos(a, b) / tau`` whose product ran in bfloat16 (see the module doc)."""
    return gamma_bf16(dim + 4) / temperature + cosine_logit_error(dim, temperature)


def bf16_autocast():
    return torch.autocast('cpu', dtype=torch.bfloat16)


def batches(num_steps: int, num_rows: int, dim: int):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, dim, generator=generator), torch.randperm(num_rows, generator=generator)[:BATCH])
            for _ in range(num_steps)]


@pytest.mark.parametrize('with_offsets', [False, True])
def test_cosine_logits_are_float32_when_their_product_runs_in_bfloat16(with_offsets):
    feats, weight = torch.randn(BATCH, DIM, requires_grad=True), torch.randn(NUM_CLASSES, DIM, requires_grad=True)
    offsets = torch.zeros(NUM_CLASSES) if with_offsets else None
    with bf16_autocast():
        logits = cosine_logits(feats, weight, 0.2, offsets)
    assert logits.dtype == torch.float32
    reference = F.normalize(feats, dim=1) @ F.normalize(weight, dim=1).t() / 0.2
    assert (logits - reference).abs().max() <= bf16_logit_error(DIM, 0.2)
    logits.sum().backward()
    assert feats.grad.dtype == weight.grad.dtype == torch.float32


@pytest.mark.parametrize('negatives', ['full', 'recent'])
def test_instance_cls_head_gives_float32_losses_and_keeps_float32_rows_under_bf16_autocast(negatives):
    torch.manual_seed(0)
    head = InstanceClsHead(NUM_CLASSES, DIM, temperature=0.2, negatives=negatives, num_negatives=10)
    for step, (feats, sample_idx) in enumerate(batches(3, NUM_CLASSES, DIM)):
        reference = copy.deepcopy(head)  # the same rows, momentum, transitions and FIFO, in float32
        reference_loss = reference.loss(feats, sample_idx)['loss']
        feats = feats.clone().requires_grad_(True)
        with bf16_autocast():
            loss = head.loss(feats, sample_idx)['loss']
        used = head.rows.handed_out
        assert used.weight.dtype == used.momentum.dtype == torch.float32  # brought forward in float32
        assert loss.dtype == torch.float32
        num_columns = used.local_indices.numel()
        bound = (cross_entropy_error(bf16_logit_error(DIM, 0.2), num_columns, BATCH, reference_loss.item())
                 + cross_entropy_error(cosine_logit_error(DIM, 0.2), num_columns, BATCH, reference_loss.item()))
        assert abs(loss.item() - reference_loss.item()) <= bound, step
        assert loss.item() != reference_loss.item()  # the products did run in bfloat16
        loss.backward()
        assert used.weight.grad.dtype == torch.float32 and feats.grad.dtype == torch.float32
        assert torch.isfinite(used.weight.grad).all() and used.weight.grad.abs().sum() > 0
        head.rows.step(lr=0.5, momentum=0.9, weight_decay=1e-2)
        for name, tensor in head.rows.columns().items():
            assert tensor.dtype == (torch.int64 if name == 'last_step' else torch.float32), name
    assert head.rows.state_dict()['transitions'].dtype == torch.float64


def nce_loss_error(logit_error: float, num_noise: int, loss: float, normaliser_estimated: bool) -> float:
    """Absolute error of the NCE loss (NPID Eq. 7) when every logit errs by at most ``logit_error``.

    Each of the ``1 + m`` terms per sample changes by at most the change of its ``log P = logit - log Z``. Z is
    the mean of ``exp`` of the noise logits (Eq. 8, in float64), so ``log Z`` errs by at most ``logit_error``
    in the step that estimates it, and not at all later (it is then the buffer both heads were copied with).
    Float32's roundings of the soft-plus terms, their sum and the batch mean add ``gamma`` of the loss.
    """
    log_p_error = logit_error * (2 if normaliser_estimated else 1) + gamma(4)
    return (num_noise + 1) * log_p_error + gamma(num_noise + BATCH + 8) * abs(loss)


@pytest.mark.parametrize('mode', ['nce', 'softmax'])
def test_memory_bank_nce_gives_float32_losses_and_keeps_a_float32_bank_under_bf16_autocast(mode):
    torch.manual_seed(0)
    num_rows, num_noise, temperature = 40, 4, 0.5
    head = MemoryBankNCE(num_rows, DIM, loss=mode, num_noise=num_noise, temperature=temperature)
    for step, (feats, sample_idx) in enumerate(batches(3, num_rows, DIM)):
        reference = copy.deepcopy(head)  # the same bank, normaliser and step count (so the same noise)
        reference_loss = reference.loss(feats, sample_idx)['loss'].item()
        feats = feats.clone().requires_grad_(True)
        with bf16_autocast():
            loss = head.loss(feats, sample_idx)['loss']
        assert loss.dtype == torch.float32
        if mode == 'softmax':
            bound = (cross_entropy_error(bf16_logit_error(DIM, temperature), num_rows, BATCH, reference_loss)
                     + cross_entropy_error(cosine_logit_error(DIM, temperature), num_rows, BATCH, reference_loss))
        else:
            bound = (nce_loss_error(bf16_logit_error(DIM, temperature), num_noise, reference_loss, step == 0)
                     + nce_loss_error(cosine_logit_error(DIM, temperature), num_noise, reference_loss, step == 0))
        assert abs(loss.item() - reference_loss) <= bound, step
        assert loss.item() != reference_loss  # the products did run in bfloat16
        loss.backward()
        assert feats.grad.dtype == torch.float32 and torch.isfinite(feats.grad).all()
        assert head.bank.weight.dtype == torch.float32 and not head.bank.weight.requires_grad
        assert head.normaliser.dtype == torch.float64
    if mode == 'nce':
        assert head.normaliser.item() > 0
    # the bank update ran in float32: its rows are unit vectors to float32 precision
    assert torch.allclose(head.bank.weight.norm(dim=1), torch.ones(num_rows), rtol=0, atol=gamma(DIM + 3))
