"""The parametric instance classifier of PIC and of the full one-million-way classifier."""
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from ..utils.distributed_softmax import sharded_cross_entropy
from ..utils.gather import all_gather_batch
from ..utils.lazy_sgd_rows import LazySGDRows
from ..utils.negatives import AllNegatives, RecentNegatives
from ..utils.row_storage import to_device
from ..utils.targets import HardClassTargets, OneHotTargets

NEGATIVE_MODES = ('full', 'recent')
# The logit of a column without a class (an empty slot of the recent negatives): its soft-max probability is
# exactly 0 in float32 and float64 (the exponential underflows), and, being finite, a zero gradient times it stays 0.
EMPTY_COLUMN_LOGIT = -1e4


class _CosineLogits(torch.autograd.Function):
    """``z_hat W^T diag(1 / |w_c|) / tau (+ offsets)`` with a backward that makes one pass over the rows besides its
    product."""

    @staticmethod
    def forward(ctx, unit_feats: Tensor, weight: Tensor, temperature: float, offsets: Optional[Tensor]) -> Tensor:
        # the norms in float32 and float32 logits also when the product runs in bfloat16 / float16 (autocast)
        scales = weight.norm(dim=1, dtype=torch.promote_types(weight.dtype, torch.float32))
        scales = scales.clamp_min(1e-12).reciprocal() / temperature  # (C,), F.normalize's eps
        product = (unit_feats @ weight.t()).to(scales.dtype)  # (B, D) x (D, C) -> (B, C), float32 under autocast
        logits = product.mul_(scales) if offsets is None else torch.addcmul(offsets, product, scales, out=product)
        ctx.save_for_backward(unit_feats, weight, scales, logits)
        ctx.temperature = temperature
        return logits

    @staticmethod
    @torch.compiler.disable  # its shapes follow the classes of the step: eager under torch.compile
    def backward(ctx, grad: Tensor):
        unit_feats, weight, scales, logits = ctx.saved_tensors
        scaled = (grad * scales).to(weight.dtype)  # (B, C)
        grad_feats = scaled @ weight  # (B, D)
        if not ctx.needs_input_grad[1]:  # detached rows (the small crops of multi-crop): no row gradient to form
            return grad_feats, None, None, None
        # d logit_bc / d w_c = z_hat_b * s_c - logit_bc * w_c / |w_c|^2, and 1 / |w_c|^2 = (s_c tau)^2 (an offset
        # column's gradient is 0: its soft-max probability is)
        radial = torch.linalg.vecdot(grad, logits, dim=0) * (scales * ctx.temperature).square()  # (C,)
        grad_weight = (scaled.t() @ unit_feats).addcmul_(weight, radial[:, None].to(weight.dtype), value=-1)
        return grad_feats, grad_weight, None, None


def cosine_logits(feats: Tensor, weight: Tensor, temperature: float, offsets: Optional[Tensor] = None) -> Tensor:
    """``cos(z_i, w_c) / tau`` (PIC Eq. 1): ``(B, D), (C, D) -> (B, C)``.

    The rows are not normalised as a ``(C, D)`` copy: the products with the normalised features are scaled by
    the rows' inverse norms, column by column (``C`` can be 65k rows against a batch of 64, so this saves several
    passes over the rows, forward and backward). Under autocast the product runs in the autocast type.
    ``offsets`` ``(C,)``, optional, are added to every row of logits in the same pass: ``EMPTY_COLUMN_LOGIT``
    takes a column out of the soft-max, 0 leaves it.
    """
    unit_feats = F.normalize(feats, dim=1)
    if torch.is_autocast_enabled(feats.device.type):
        dtype = torch.get_autocast_dtype(feats.device.type)
        with torch.autocast(feats.device.type, enabled=False):
            return _CosineLogits.apply(unit_feats.to(dtype), weight.to(dtype), temperature, offsets)
    return _CosineLogits.apply(unit_feats, weight, temperature, offsets)


@MODELS.register_module()
class InstanceClsHead(BaseModule):
    """Cosine soft-max instance classifier (PIC Eq. 1) with hard-class label smoothing (full classifier Eq. 3).

    Every training image ``i`` is its own class with a weight row ``w_i``. For a projected feature ``z_i``,

    .. math::
        L = -\\frac{1}{|B|}\\sum_{i \\in B} \\sum_c q_{ic} \\log
            \\frac{\\exp(\\cos(w_c, z_i) / \\tau)}{\\sum_{j \\in \\mathcal{N}} \\exp(\\cos(w_j, z_i) / \\tau)}

    with the one-hot target ``q_i`` of PIC, or the full classifier's smoothed target: ``1 - alpha`` on the
    instance and ``alpha / k`` on each of its ``k`` hardest classes (the rows most similar to its own, found
    once per epoch by ``HardClassHook``). The denominator runs over

    * all ``N`` rows (``negatives='full'``), optionally sharded over the ranks (``sharded=True``): the full
      classifier's hybrid parallelism, where each rank scores the gathered global batch against its own rows and
      the soft-max is reduced across ranks (see ``distributed_softmax``); or
    * the rows of the ``num_negatives`` most recent positives plus the batch's own (``negatives='recent'``,
      PIC Sec. 2.3), so that a step's cost does not grow with ``N``.

    The rows are :class:`LazySGDRows`: those a step uses are gathered, brought to the current step and, after
    ``backward``, updated by PIC Eq. 2 (``LazyCorrectedSGD`` calls their ``step``). With recent negatives the
    classes come in slots that follow the FIFO and their rows stay on the compute device from one step to the next
    (``LazySGDRows.rows_in_slots``): a step gathers and writes back only the rows that enter and leave the slots,
    and the logits of a slot without a class are masked out of the soft-max. Negative selection
    (:class:`AllNegatives` / :class:`RecentNegatives`) and targets (:class:`OneHotTargets` /
    :class:`HardClassTargets`) are parts of their own; ``loss`` is one step from top to bottom.

    Multi-crop (the public PIC release, not the paper): ``loss(feats, sample_idx, detached_feats,
    detached_sample_idx)`` also scores the small crops, against the same rows detached, so that the rows are
    trained by ``feats`` alone.

    ``num_classes='auto'`` builds the head without rows and leaves them to ``allocate_rows``.

    Example (plain PyTorch, one process; the docstring runs as a test)::

        >>> head = InstanceClsHead(num_classes=1000, in_channels=128, negatives='recent', num_negatives=256)
        >>> z, sample_idx = torch.randn(32, 128, requires_grad=True), torch.arange(32)
        >>> loss = head.loss(z, sample_idx)['loss']
        >>> loss.backward()
        >>> head.rows.step(lr=0.03, momentum=0.9, weight_decay=1e-4)  # what LazyCorrectedSGD does after its step

    Args:
        num_classes (int | str): Number of instance classes: the size of the training set, or ``'auto'`` for
            the rows to be allocated later by ``allocate_rows``.
        in_channels (int): Length ``D`` of the projected features and of each row. Defaults to 128.
        temperature (float): Temperature ``tau`` of the cosine soft-max. Defaults to 0.2 (PIC Sec. 4.1).
        negatives (str): ``'full'`` (all rows in every step) or ``'recent'`` (recent-negative sampling).
            Defaults to 'full'.
        num_negatives (int): ``K``, the number of recent positives kept as negatives when
            ``negatives='recent'``. Defaults to 65536 (PIC Sec. 4.1).
        sharded (bool): Split the rows over the ranks (``negatives='full'`` only). Defaults to False.
        label_smoothing (float): ``alpha`` of the hard-class smoothing; 0 turns it off (``negatives='full'``
            only). Defaults to 0.
        num_hard_classes (int): ``k``, the hard classes per instance. Defaults to 100 (full classifier).
        init_std (float): Standard deviation of the rows' normal initialisation, as the PIC release
            (small rows learn fast under a cosine loss; see ``RowStorage``). Defaults to 0.01.
        placement (str): ``'device'`` or ``'host'``: where the table lives (see ``RowStorage``).
            Defaults to 'device'.
        init_cfg (dict, optional): Initialisation config of the module. Defaults to None.
    """

    def __init__(self,
                 num_classes: Union[int, str],
                 in_channels: int = 128,
                 temperature: float = 0.2,
                 negatives: str = 'full',
                 num_negatives: int = 65536,
                 sharded: bool = False,
                 label_smoothing: float = 0.,
                 num_hard_classes: int = 100,
                 init_std: float = 0.01,
                 placement: str = 'device',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f'negatives={negatives!r} is not one of {NEGATIVE_MODES}.')
        if temperature <= 0:
            raise ValueError(f'temperature={temperature} must be positive (PIC uses 0.2).')
        if negatives == 'recent' and (sharded or label_smoothing):
            raise ValueError(f"negatives='recent' works with a replicated table and one-hot targets; got "
                             f'sharded={sharded}, label_smoothing={label_smoothing}: use negatives=\'full\' for '
                             'the sharded, smoothed full classifier.')
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.negatives = RecentNegatives(num_negatives) if negatives == 'recent' else AllNegatives()
        self.targets = HardClassTargets(label_smoothing, num_hard_classes) if label_smoothing else OneHotTargets()
        self.rows_cfg = dict(dim=in_channels, init_std=init_std, placement=placement, sharded=sharded)
        self.num_classes: Optional[int] = None
        self.rows: Optional[LazySGDRows] = None
        if num_classes != 'auto':
            self.allocate_rows(num_classes)

    def allocate_rows(self, num_classes: int) -> None:
        """Create the rows of ``num_classes`` instances, one per training image (and room for their hard classes).

        The constructor calls it for an explicit ``num_classes``; for ``'auto'``, ``InstanceCountCheckHook`` calls
        it with the training set's size before the run loads or resumes a checkpoint.

        Args:
            num_classes (int): The size of the training set.

        Raises:
            ValueError: If ``num_classes`` is not a positive int, or too small for ``num_negatives`` /
                ``num_hard_classes``.
        """
        if isinstance(num_classes, int) and num_classes > 0:
            self.negatives.check(num_classes)
            self.targets.check(num_classes)
        rows = LazySGDRows(num_classes, **self.rows_cfg)
        self.targets.allocate(rows)
        self.num_classes, self.rows = num_classes, rows

    @property
    def sharded(self) -> bool:
        return self.rows.world_size > 1

    @property
    def num_hard_classes(self) -> Optional[int]:
        """``k`` of the hard-class smoothing, or None when the targets are one-hot."""
        return getattr(self.targets, 'num_hard_classes', None)

    def set_hard_classes(self, hard_classes: Tensor) -> None:
        """Smooth each instance's target onto these classes from now on (``HardClassHook`` calls it).

        Args:
            hard_classes (Tensor): ``(num_local_rows, k)`` global row indices, -1 where not known.

        Raises:
            ValueError: If the head does not smooth (``label_smoothing=0``) or ``k`` differs.
        """
        if not isinstance(self.targets, HardClassTargets):
            raise ValueError('HardClassHook finds hard classes for label smoothing, but model.head.label_smoothing '
                             'is 0: set it (the paper uses 0.2), or remove HardClassHook from custom_hooks.')
        self.targets.set_hard_classes(hard_classes)

    @torch.compiler.disable  # data-dependent shapes (row gathers, unique, FIFO): eager under torch.compile
    def loss(self,
             feats: Tensor,
             sample_idx: Tensor,
             detached_feats: Optional[Tensor] = None,
             detached_sample_idx: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Cosine soft-max loss of a batch, and of further views scored against the same rows detached.

        The detached views are the small crops of the public PIC release's multi-crop (see
        ``InstanceClassification``'s ``num_large_views``): their logits use this step's rows (the same classes,
        brought to the same step) without gradient, so only ``feats`` train the rows, which take one PIC Eq. 2
        step as without them; ``detached_feats`` still get their gradient. The loss is the mean over all
        ``B_r + B_d`` samples, the release's one cross-entropy over the concatenated logits.

        Every choice of the step (the range check, the classes, each sample's column) is made on the host, from
        host instance labels, so that on a GPU no step waits for a value read back from it.

        Args:
            feats (Tensor): ``(B_r, D)`` projected features of this rank's images.
            sample_idx (Tensor): ``(B_r,)`` instance labels: the images' indices in the training set, on the host
                (``InstanceClassification`` gives them so; a GPU tensor is read back).
            detached_feats (Tensor, optional): ``(B_d, D)`` projected features of other views, scored against the
                rows detached. Defaults to None.
            detached_sample_idx (Tensor, optional): ``(B_d,)`` their instance labels, each among the classes this
                step scores (``sample_idx`` of any rank, e.g. other views of the same images). Required with
                ``detached_feats``. Defaults to None.

        Returns:
            dict[str, Tensor]: ``{'loss': ...}``, the mean over the global batch when sharded.
        """
        if self.rows is None:
            raise RuntimeError("num_classes='auto' and no rows yet: InstanceCountCheckHook (in custom_hooks) "
                               'allocates them before training; outside the runner, call allocate_rows(N) first.')
        if (detached_feats is None) != (detached_sample_idx is None):
            raise ValueError('detached_feats and detached_sample_idx go together: give both (the small crops and '
                             'their instance labels) or neither.')
        sample_idx = sample_idx.cpu().long()  # (B_r,) on the host
        self.rows.check_range(sample_idx)
        self.rows.place_on(feats.device)
        if self.sharded:  # every rank scores the global batch against its own rows
            feats, sample_idx = all_gather_batch(feats, sample_idx)  # (B, D), (B,)
        classes, positions = self.negatives(sample_idx, self.rows)  # (C_r,) local rows, (B,) columns: host
        if detached_feats is not None:
            detached_sample_idx = detached_sample_idx.cpu().long()
            self.rows.check_range(detached_sample_idx)
            if self.sharded:  # (B_d, D), (B_d,) of the global batch
                detached_feats, detached_sample_idx = all_gather_batch(detached_feats, detached_sample_idx)
            detached_positions = self._columns_of(detached_sample_idx, classes)  # (B_d,)
        take_rows = self.rows.rows_in_slots if self.negatives.slotted else self.rows.rows_for_step
        weight = take_rows(classes, feats.device)  # (C_r, D), brought to this step
        offsets = self._column_offsets(classes, feats.device)  # (C_r,) or None: out of the soft-max where empty
        logits = cosine_logits(feats, weight, self.temperature, offsets)  # (B, C_r)
        target_columns, target_weights = self.targets(to_device(positions, feats.device), weight.shape[0],
                                                      self.rows)  # (B, T) each
        if detached_feats is not None:  # the same rows, without gradient: no second update, no second FIFO entry
            detached_logits = cosine_logits(detached_feats, weight.detach(), self.temperature,
                                            offsets)  # (B_d, C_r)
            detached_columns, detached_weights = self.targets(to_device(detached_positions, feats.device),
                                                              weight.shape[0], self.rows)
            logits = torch.cat([logits, detached_logits])  # (B + B_d, C_r)
            target_columns = torch.cat([target_columns, detached_columns])  # (B + B_d, T)
            target_weights = torch.cat([target_weights, detached_weights])  # (B + B_d, T)
        return dict(loss=sharded_cross_entropy(logits, target_columns, target_weights, self.sharded,
                                               logit_bound=1 / self.temperature))  # |cos / tau| <= 1 / tau

    @staticmethod
    def _column_offsets(classes: Tensor, device: torch.device) -> Optional[Tensor]:
        """``EMPTY_COLUMN_LOGIT`` for the host ``classes`` that are -1 (slots without a class) and 0 for the others,
        ``(C_r,)`` float32 on ``device``; None when every slot holds a class."""
        empty = classes < 0
        if not bool(empty.any()):
            return None
        return to_device(empty.float() * EMPTY_COLUMN_LOGIT, device)

    def _columns_of(self, sample_idx: Tensor, classes: Tensor) -> Tensor:
        """Each instance's column among a step's classes, ``(B,)``: -1 where another rank's shard holds it.

        Args:
            sample_idx (Tensor): ``(B,)`` global instance indices.
            classes (Tensor): ``(C_r,)`` the step's local rows, as the negative selection returns them.

        Raises:
            ValueError: If the table is not sharded and an instance is not among the classes.
        """
        columns = self.negatives.columns_of(sample_idx, classes, self.rows)  # (B,)
        found = columns >= 0
        if not self.sharded and not bool(found.all()):
            missing = sample_idx[~found][0].item()
            raise ValueError(f'instance {missing} of the detached views is not among the classes of this step: '
                             "with negatives='recent' a detached view must be another view of an image of the "
                             'batch (its small crop), so that its row is one of the rows the step uses.')
        return columns
