"""Target distributions of the instance classifier over the columns of one step: one-hot (PIC) or smoothed
onto the hardest classes (the full classifier, Eq. 3)."""
from typing import Tuple

import torch
from torch import Tensor, nn

from .distributed_softmax import spread_over_ranks
from .row_storage import RowStorage


class OneHotTargets(nn.Module):
    """All mass on the sample's own instance."""

    def check(self, num_rows: int) -> None:
        """Any table size works."""

    def allocate(self, rows: RowStorage) -> None:
        """Nothing to keep per row."""

    def forward(self, positions: Tensor, num_columns: int, rows: RowStorage) -> Tuple[Tensor, Tensor]:
        """Columns ``(B, 1)`` of each sample's instance in this step's logits (-1 where another rank holds it)
        and their weights ``(B, 1)``."""
        owned = (positions >= 0) & (positions < num_columns)  # (B,)
        instance = torch.where(owned, positions, -1)[:, None]  # (B, 1)
        return instance, torch.ones_like(instance, dtype=torch.float32)


class HardClassTargets(OneHotTargets):
    """``1 - alpha`` on the instance and ``alpha / k`` on each of its ``k`` hardest classes (full classifier Eq. 3).

    The hard classes are global row indices, ``(num_local_rows, k)``, written by :meth:`set_hard_classes`
    (``HardClassHook`` does, once per epoch); -1 marks one not known yet, whose mass stays on the instance. They
    are not in checkpoints: the hook searches again at the first epoch of every run, so a saved copy would only
    cost space (8 bytes x k per row: 1 GB for ImageNet at k = 100) and, sharded, hold rank 0's.

    Args:
        label_smoothing (float): ``alpha`` in (0, 1); the paper uses 0.2.
        num_hard_classes (int): ``k``; the paper uses 100.
    """

    def __init__(self, label_smoothing: float, num_hard_classes: int) -> None:
        super().__init__()
        if not 0 < label_smoothing < 1:
            raise ValueError(f'label_smoothing={label_smoothing} must lie in (0, 1) (the paper uses 0.2); '
                             'set it to 0 for one-hot targets.')
        self.label_smoothing = label_smoothing
        self.num_hard_classes = num_hard_classes

    def check(self, num_rows: int) -> None:
        """Refuse ``k`` outside ``[1, N - 1]``."""
        if not 0 < self.num_hard_classes < num_rows:
            raise ValueError(f'num_hard_classes={self.num_hard_classes} must lie in [1, num_classes - 1 = '
                             f'{num_rows - 1}]: lower model.head.num_hard_classes for a small data set.')

    def allocate(self, rows: RowStorage) -> None:
        """Room for the hard classes of this rank's rows, none known yet."""
        self.register_buffer('hard_classes', torch.full((rows.num_local_rows, self.num_hard_classes), -1,
                                                        dtype=torch.long, device=rows.device),
                             persistent=False)

    def set_hard_classes(self, hard_classes: Tensor) -> None:
        """Replace the hard classes: ``(num_local_rows, k)`` global row indices, -1 where unknown."""
        if hard_classes.shape != self.hard_classes.shape:
            raise ValueError(f'got hard classes of shape {tuple(hard_classes.shape)} for '
                             f'{tuple(self.hard_classes.shape)} (rows of this rank, k): set HardClassHook\'s k to '
                             f'model.head.num_hard_classes={self.num_hard_classes}.')
        self.hard_classes.copy_(hard_classes)

    def forward(self, positions: Tensor, num_columns: int, rows: RowStorage) -> Tuple[Tensor, Tensor]:
        """Columns and weights ``(B, 1 + k)``: the instance, then its hard classes (-1 where not in this shard)."""
        instance, _ = super().forward(positions, num_columns, rows)  # (B, 1)
        owned = instance[:, 0] >= 0
        hard = self.hard_classes[positions.clamp(0, num_columns - 1)]  # (B, k) global, valid where owned
        hard = spread_over_ranks(hard + 1, owned) - 1 if rows.world_size > 1 else hard
        known = hard >= 0
        hard_local = hard - rows.row_offset
        hard_local = torch.where(known & (hard_local >= 0) & (hard_local < num_columns), hard_local, -1)
        per_hard = self.label_smoothing / hard.shape[1]
        instance_weight = 1 - per_hard * known.sum(dim=1, keepdim=True)  # (B, 1)
        weights = torch.cat([instance_weight, known * per_hard], dim=1)
        return torch.cat([instance, hard_local], dim=1), weights
