"""Which classifier rows a step scores against: all of them, or the recent positives (PIC Sec. 2.3).

Both choose on the host, from host instance indices, and return host tensors: no choice waits for the GPU.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from .gather import all_gather_rows, host_group
from .host_state import HostStateMixin
from .row_storage import RowStorage, first_occurrences, lookup_first


class AllNegatives(nn.Module):
    """Every row of this rank's shard, every step: PIC's full soft-max and the full classifier's."""

    # the classes are the table's rows in order, each step gathered and written back whole
    slotted = False

    def check(self, num_rows: int) -> None:
        """Any table size works."""

    def forward(self, sample_idx: Tensor, rows: RowStorage) -> Tuple[Tensor, Tensor]:
        """``(C_r,)`` local classes of this step and the column of each host ``sample_idx`` among them, ``(B,)``
        (outside ``[0, C_r)`` where the sample's row lives on another rank)."""
        classes = torch.arange(rows.num_local_rows)  # (C_r,)
        return classes, sample_idx - rows.row_offset

    def columns_of(self, sample_idx: Tensor, classes: Tensor, rows: RowStorage) -> Tensor:
        """The column of each host global ``sample_idx`` among this step's ``classes``, ``(B,)``: -1 where another
        rank's shard holds it."""
        local = sample_idx - rows.row_offset
        return torch.where((local >= 0) & (local < rows.num_local_rows), local, -1)


class RecentNegatives(HostStateMixin, nn.Module):
    """The batch's own rows plus those of the ``K`` most recent positives (PIC Sec. 2.3, "recent negative
    sampling"), kept in a FIFO of instance indices.

    Every rank sees the same classes (the batch indices are gathered over ranks), so a replicated table and its
    averaged gradients stay identical everywhere; the gathered batch then enters the FIFO.

    The classes come in slots that follow the FIFO (``slotted``): slot ``s < K`` holds FIFO entry ``s`` and the
    ``G`` slots after them the global batch, -1 where a slot holds no class (an empty entry, or an instance in an
    earlier slot too). A recent row thus keeps its slot from one step to the next, so its row can stay on the
    compute device (``LazySGDRows.rows_in_slots``): only the slots the batch enters change. The FIFO lives in host
    memory (plain tensors, not buffers: ``model.to`` does not move them and DistributedDataParallel does not
    broadcast them) and is in the checkpoint under the keys ``recent_indices`` and ``recent_head`` (see
    :class:`HostStateMixin`), so a resumed run samples as the uninterrupted one.

    Args:
        num_negatives (int): ``K``, the number of recent positives kept. PIC uses 65536.
    """

    host_state_names = ('recent_indices', 'recent_head')
    slotted = True

    def __init__(self, num_negatives: int) -> None:
        super().__init__()
        if num_negatives < 1:
            raise ValueError(f'num_negatives={num_negatives} must be positive (PIC uses 65536).')
        self.num_negatives = num_negatives
        # -1 marks an empty slot (the start of training)
        self.recent_indices = torch.full((num_negatives, ), -1, dtype=torch.long)
        self.recent_head = torch.zeros((), dtype=torch.long)

    def check(self, num_rows: int) -> None:
        """Refuse a table smaller than ``K``."""
        if self.num_negatives > num_rows:
            raise ValueError(f'num_negatives={self.num_negatives} must lie in [1, num_classes={num_rows}]: lower '
                             "model.head.num_negatives for a small data set, or use negatives='full'.")

    @torch.no_grad()
    def forward(self, sample_idx: Tensor, rows: RowStorage) -> Tuple[Tensor, Tensor]:
        """The classes in their slots, ``(K + G,)`` with -1 for a slot without one: the FIFO's, then the global
        batch's; and the slot of each host ``sample_idx``, ``(B,)``."""
        global_batch = all_gather_rows(sample_idx, group=host_group())  # (G,)
        entries = torch.cat([self.recent_indices, global_batch])  # (K + G,), -1 for an empty FIFO entry
        values, first = first_occurrences(entries)  # (U,) sorted, the first slot of each
        classes = torch.full_like(entries, -1).index_copy_(0, first, values)  # each instance once, -1 for none
        self._enqueue(global_batch)
        return classes, lookup_first(values, first, sample_idx)

    def columns_of(self, sample_idx: Tensor, classes: Tensor, rows: RowStorage) -> Tensor:
        """The slot of each host ``sample_idx`` among this step's ``classes``, ``(B,)``: -1 where none holds it."""
        return lookup_first(*first_occurrences(classes), sample_idx)

    def _enqueue(self, indices: Tensor) -> None:
        capacity = self.recent_indices.numel()
        indices = indices[-capacity:]
        slots = (self.recent_head + torch.arange(indices.numel())) % capacity
        self.recent_indices[slots] = indices
        self.recent_head.copy_((self.recent_head + indices.numel()) % capacity)

    def host_state_hint(self, name: str) -> str:
        return "set model.head.num_negatives to the checkpoint's K."
