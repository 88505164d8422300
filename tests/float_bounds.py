"""Rounding-error bounds for float32 results, so that tests compare them against float64 references soundly.

A float32 result differs from the exact value by rounding, and by how much depends on the kernels torch picks
(``ATEN_CPU_CAPABILITY`` default / avx2 / avx512 sum in different orders and may fuse multiply-adds). A fixed
``atol`` below what float32 can resolve passes on one machine and fails on another. The bounds here follow
Higham (Accuracy and Stability of Numerical Algorithms, 2nd ed., Sec. 2-3): a sum of ``n`` terms computed in
any order, with or without fused multiply-adds, errs by at most ``gamma_n * sum |terms|``, where
``gamma_n = n u / (1 - n u)`` and ``u = 2^-24`` is float32's unit roundoff. The bound is set by the magnitude
of the terms, not of the result: an element near zero where large terms cancel keeps the error of the terms.

Every bound is a worst case, usually far above the error seen, and still far below what a wrong formula costs
(an error of the order of the terms themselves), so a test keeps its power to fail.
"""
import torch
from torch import Tensor

UNIT_ROUNDOFF = torch.finfo(torch.float32).eps / 2  # u = 2^-24


def gamma(num_roundings: int) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of ``n`` float32 roundings in a row."""
    product = num_roundings * UNIT_ROUNDOFF
    return product / (1 - product)


def cosine_logit_error(dim: int, temperature: float) -> float:
    """Absolute error of one float32 logit ``cos(a, b) / tau`` of two ``dim``-long vectors.

    Normalising a vector errs by ``gamma_{D+2}`` per element relative (a sum of D squares, a square root, a
    division); the dot product of two unit vectors sums D terms whose absolute values add up to at most 1
    (Cauchy-Schwarz); dividing by ``tau`` rounds once more: ``(2 gamma_{D+2} + gamma_D + u) / tau``.
    """
    return gamma(3 * dim + 5) / temperature


def cross_entropy_error(logit_error: float, num_classes: int, batch_size: int, loss: float) -> float:
    """Absolute error of a float32 mean cross-entropy (or its smoothed form) over float32 logits.

    A logit error ``e`` moves each ``log-sum-exp - sum_c q_c z_c`` by at most ``2 e``; the float32
    log-sum-exp sums ``C`` exponentials (``gamma_{C+2}`` relative, so absolute after the logarithm), and the
    mean over the batch adds ``gamma_B`` of the loss.
    """
    return 2 * logit_error + gamma(num_classes + 2) + gamma(batch_size + 2) * abs(loss)


def cosine_softmax_gradient_bound(vectors: Tensor, others: Tensor, coefficients: Tensor, temperature: float,
                                  logit_error: float, extra_roundings: int = 0) -> Tensor:
    """Bound on the float32 error of the gradient of a cosine soft-max loss with respect to ``vectors``.

    For ``logits = normalize(a) @ normalize(b).T / tau`` and ``dL/dlogits = c`` (``c = (P - Q) / B`` for
    probabilities ``P`` and targets ``Q``), the gradient of row ``i`` of ``a`` is

        g_i = (h_i - n_i (n_i . h_i)) / |a_i|,     h_i = sum_j c_ij normalize(b_j) / tau,   n_i = a_i / |a_i|.

    Every rounding in ``h``, in the projection and in the division adds at most ``gamma`` of the magnitude
    ``T_i = (H_i + |n_i| (|n_i| . H_i)) / |a_i|`` of the terms, with ``H_i = sum_j |c_ij| |normalize(b_j)| / tau``
    evaluated with ``|c_ij| <= (P_ij + Q_ij) / B``; an error ``e`` in the logits moves ``P`` by a relative
    ``2 e``, which adds ``2 e T_i``. The result bounds ``|g32 - g|`` element-wise.

    Args:
        vectors (Tensor): ``(A, D)`` the rows ``a`` the gradient is taken for (float64 copy of the inputs).
        others (Tensor): ``(J, D)`` the rows ``b`` on the other side of the logits.
        coefficients (Tensor): ``(A, J)`` upper bounds of ``|dL/dlogits|`` (transposed if ``a`` is the
            second factor), float64.
        temperature (float): ``tau``.
        logit_error (float): Bound of the logits' absolute error (:func:`cosine_logit_error`).
        extra_roundings (int): Roundings beyond one computation's, e.g. ``W`` when ``W`` ranks each compute a
            share of the gradient and an all-reduce adds them up. Defaults to 0.

    Returns:
        Tensor: ``(A, D)`` float64 bounds.
    """
    vectors, others = vectors.double(), others.double()
    unit = vectors / vectors.norm(dim=1, keepdim=True)  # (A, D)
    other_unit = others / others.norm(dim=1, keepdim=True)  # (J, D)
    term_sum = coefficients.double().abs() @ other_unit.abs() / temperature  # (A, J) x (J, D) -> (A, D)
    projection = unit.abs() * (unit.abs() * term_sum).sum(dim=1, keepdim=True)  # (A, D)
    magnitude = (term_sum + projection) / vectors.norm(dim=1, keepdim=True)
    num_roundings = others.shape[0] + 4 * vectors.shape[1] + 12 + extra_roundings
    return (2 * logit_error + gamma(num_roundings)) * magnitude


def assert_within(actual: Tensor, reference: Tensor, bound, what: str) -> None:
    """``|actual - reference| <= bound`` element-wise, computed in float64; the message names the worst ratio."""
    error = (actual.double() - reference.double()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64).expand_as(error)
    worst = int((error / bound).argmax())
    assert bool((error <= bound).all()), (
        f'{what}: error {error.flatten()[worst].item():.3g} exceeds the float32 bound '
        f'{bound.flatten()[worst].item():.3g} at element {worst}')
