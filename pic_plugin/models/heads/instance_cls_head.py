"""The parametric instance classifier of PIC and of the full one-million-way classifier."""
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather, get_dist_info
from mmengine.model import BaseModule
from torch import Tensor

from mmpretrain.registry import MODELS
from ..utils.distributed_softmax import gather_with_grad, sharded_cross_entropy, spread_over_ranks
from ..utils.row_table import RowTable

NEGATIVE_MODES = ('full', 'recent')


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

    The rows live in a :class:`RowTable`; those a step uses are gathered, brought to the current step and
    updated by ``LazyCorrectedSGD``.

    ``num_classes='auto'`` builds the head without rows and leaves them to ``allocate_rows``.

    Example (plain PyTorch, one process)::

        head = InstanceClsHead(num_classes=1000, in_channels=128)
        optim = LazyCorrectedSGD(torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4))
        optim.attach(head)
        loss = head.loss(z, sample_idx)['loss']   # z: (B, 128), sample_idx: (B,)
        optim.update_params(loss)

    Args:
        num_classes (int | str): Number of instance classes: the size of the training set, or ``'auto'`` for
            the rows to be allocated later by ``allocate_rows``.
        in_channels (int): Length ``D`` of the projected features and of each row. Defaults to 128.
        temperature (float): Temperature ``tau`` of the cosine soft-max. Defaults to 0.2 (PIC Sec. 3.1).
        negatives (str): ``'full'`` (all rows in every step) or ``'recent'`` (recent-negative sampling).
            Defaults to 'full'.
        num_negatives (int): ``K``, the number of recent positives kept as negatives when
            ``negatives='recent'``. Defaults to 65536 (PIC Sec. 3.1).
        sharded (bool): Split the rows over the ranks (``negatives='full'`` only). Defaults to False.
        label_smoothing (float): ``alpha`` of the hard-class smoothing; 0 turns it off (``negatives='full'``
            only). Defaults to 0.
        num_hard_classes (int): ``k``, the hard classes per instance. Defaults to 100 (full classifier).
        init_std (float): Standard deviation of the rows' normal initialisation, as the PIC release
            (small rows learn fast under a cosine loss; see ``RowTable``). Defaults to 0.01.
        placement (str): ``'device'`` or ``'host'``: where the table lives (see ``RowTable``).
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
        if negatives == 'recent' and num_negatives < 1:
            raise ValueError(f'num_negatives={num_negatives} must be positive (PIC uses 65536).')
        if negatives == 'recent' and (sharded or label_smoothing):
            raise ValueError(f"negatives='recent' works with a replicated table and one-hot targets; got "
                             f'sharded={sharded}, label_smoothing={label_smoothing}: use negatives=\'full\' for '
                             'the sharded, smoothed full classifier.')
        if not 0 <= label_smoothing < 1:
            raise ValueError(f'label_smoothing={label_smoothing} must lie in [0, 1) (the paper uses 0.2).')
        self.temperature = temperature
        self.negatives = negatives
        self.num_negatives = num_negatives
        self.label_smoothing = label_smoothing
        self.num_hard_classes = num_hard_classes
        self.table_cfg = dict(dim=in_channels, init_std=init_std, placement=placement, sharded=sharded)
        self.num_classes: Optional[int] = None
        self.table: Optional[RowTable] = None
        if negatives == 'recent':
            # FIFO of the most recent positives; -1 marks an empty slot (the start of training).
            self.register_buffer('recent_indices', torch.full((num_negatives, ), -1, dtype=torch.long))
            self.register_buffer('recent_head', torch.zeros((), dtype=torch.long))
        if num_classes != 'auto':
            self.allocate_rows(num_classes)

    def allocate_rows(self, num_classes: int) -> None:
        """Create the table of ``num_classes`` rows, one per training image (and their hard classes).

        The constructor calls it for an explicit ``num_classes``; for ``'auto'``, ``InstanceCountCheckHook`` calls
        it with the training set's size before the run loads or resumes a checkpoint.

        Args:
            num_classes (int): The size of the training set.

        Raises:
            ValueError: If ``num_classes`` is not a positive int (``RowTable`` checks it), or too small for
                ``num_negatives`` / ``num_hard_classes``.
        """
        table = RowTable(num_classes, **self.table_cfg)
        if self.negatives == 'recent' and self.num_negatives > num_classes:
            raise ValueError(f'num_negatives={self.num_negatives} must lie in [1, num_classes={num_classes}]: lower '
                             "model.head.num_negatives for a small data set, or use negatives='full'.")
        if self.label_smoothing and not 0 < self.num_hard_classes < num_classes:
            raise ValueError(f'num_hard_classes={self.num_hard_classes} must lie in [1, num_classes - 1 = '
                             f'{num_classes - 1}]: lower model.head.num_hard_classes for a small data set.')
        self.num_classes, self.table = num_classes, table
        if self.label_smoothing:
            # global indices of each local row's hard classes, written by HardClassHook; -1 = not known yet.
            # Not in checkpoints: the hook searches again at the first epoch of every run, so a saved copy would
            # only cost space (8 bytes x k per row: 1 GB for ImageNet at k = 100) and, sharded, hold rank 0's.
            self.register_buffer('hard_classes',
                                 torch.full((self.table.num_local_rows, self.num_hard_classes), -1, dtype=torch.long),
                                 persistent=False)

    @property
    def sharded(self) -> bool:
        return self.table.world_size > 1

    def loss(self, feats: Tensor, sample_idx: Tensor) -> Dict[str, Tensor]:
        """Cosine soft-max loss of a batch.

        Args:
            feats (Tensor): ``(B_r, D)`` projected features of this rank's images.
            sample_idx (Tensor): ``(B_r,)`` instance labels: the images' indices in the training set.

        Returns:
            dict[str, Tensor]: ``{'loss': ...}``, the mean over the global batch when sharded.
        """
        if self.table is None:
            raise RuntimeError("num_classes='auto' and no rows yet: InstanceCountCheckHook (in custom_hooks) "
                               'allocates them before training; outside the runner, call allocate_rows(N) first.')
        sample_idx = sample_idx.to(feats.device).long()
        self.table.check_range(sample_idx)
        self.table.place_on(feats.device)
        if self.sharded:  # every rank scores the global batch against its own rows
            feats, sample_idx = gather_with_grad(feats), gather_with_grad(sample_idx)  # (B, D), (B,)
        if self.negatives == 'full':
            local_classes = torch.arange(self.table.num_local_rows, device=feats.device)
            positions = sample_idx - self.table.row_offset  # column of each instance in this shard
        else:
            local_classes, positions = self._recent_classes(sample_idx)
        rows = self.table.rows_for_update(local_classes, feats.device)  # (C_r, D)
        logits = F.normalize(feats, dim=1) @ F.normalize(rows, dim=1).t() / self.temperature  # (B, D) x (D, C_r)
        target_positions, target_weights = self._targets(positions, num_columns=rows.shape[0])
        return dict(loss=sharded_cross_entropy(logits, target_positions, target_weights, self.sharded))

    def _targets(self, positions: Tensor, num_columns: int) -> Tuple[Tensor, Tensor]:
        """Columns in this shard and weights of each sample's target distribution, ``(B, T)`` each.

        One-hot (``T = 1``), or Eq. 3 of the full classifier (``T = 1 + k``): ``1 - alpha`` on the instance and
        ``alpha / k`` on each known hard class (the mass of hard classes not known yet stays on the instance).
        Columns of classes on other ranks are -1.
        """
        owned = (positions >= 0) & (positions < num_columns)  # (B,)
        instance = torch.where(owned, positions, -1)[:, None]  # (B, 1)
        if not self.label_smoothing:
            return instance, torch.ones_like(instance, dtype=torch.float32)
        hard = self.hard_classes[positions.clamp(0, num_columns - 1)]  # (B, k) global, valid where owned
        hard = spread_over_ranks(hard + 1, owned) - 1 if self.sharded else hard
        known = hard >= 0
        hard_local = hard - self.table.row_offset
        hard_local = torch.where(known & (hard_local >= 0) & (hard_local < num_columns), hard_local, -1)
        per_hard = self.label_smoothing / hard.shape[1]
        instance_weight = 1 - per_hard * known.sum(dim=1, keepdim=True)  # (B, 1)
        weights = torch.cat([instance_weight, known * per_hard], dim=1)
        return torch.cat([instance, hard_local], dim=1), weights

    @torch.no_grad()
    def _recent_classes(self, sample_idx: Tensor) -> Tuple[Tensor, Tensor]:
        """Classes of this step in the recent mode: the batch's own plus the ``K`` most recent positives.

        Every rank sees the same classes (the batch indices are gathered over ranks), so the replicated rows
        and their averaged gradients stay identical everywhere. The gathered batch then enters the FIFO.

        Returns:
            tuple[Tensor, Tensor]: sorted unique class indices ``(C,)`` and each sample's column ``(B,)``.
        """
        _, world_size = get_dist_info()
        global_batch = torch.cat(all_gather(sample_idx)) if world_size > 1 else sample_idx
        recent = self.recent_indices[self.recent_indices >= 0]
        class_indices = torch.unique(torch.cat([global_batch, recent]))  # sorted
        positions = torch.searchsorted(class_indices, sample_idx)
        self._enqueue(global_batch)
        return class_indices, positions

    def _enqueue(self, indices: Tensor) -> None:
        capacity = self.recent_indices.numel()
        indices = indices[-capacity:]
        slots = (self.recent_head + torch.arange(indices.numel(), device=indices.device)) % capacity
        self.recent_indices[slots] = indices
        self.recent_head.copy_((self.recent_head + indices.numel()) % capacity)
