"""The ``k`` classifier rows most similar to each row: the hard classes of the full classifier's label smoothing.

Liu et al. (one-million-way instance classifier, Sec. 3, Eq. 2-3) represent every instance ``i`` by its
classifier row ``w_i`` and, once per epoch, find the ``k`` rows with the highest cosine similarity to it, its
hard classes ``N_k(i)``. The smoothed target of instance ``i`` (Eq. 2) is

    y_ij = 1 - alpha     if j = i,
           alpha / k     if j in N_k(i),
           0             otherwise,

and the loss (Eq. 3) is the cross-entropy of the cosine soft-max against ``y_i`` (the paper uses ``k = 100``,
``alpha = 0.2``). ``InstanceClsHead`` builds these targets from the ``hard_classes`` buffer that
``HardClassHook`` fills with :func:`top_k_similar_rows`; rows whose hard classes are not known yet keep a
one-hot target.

For ImageNet-1k the search is a 1.28M x 1.28M similarity matrix, which never exists here: the rows are compared
in ``chunk_size x key_block_size`` blocks, and a running top-k per row keeps what matters (see
:class:`_RunningTopK`). With the table sharded over ranks, every rank broadcasts its shard in turn and each rank
keeps the top-k of its own rows over all ``N`` rows.
"""
import math
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import broadcast, get_rank
from torch import Tensor

from pic_plugin.utils.progress import PassProgress
from .gather import all_gather_rows

# Block sizes (query rows, key rows) that keep a CPU's score block in cache and a GPU busy.
DEFAULT_BLOCKS: Dict[str, Tuple[int, int]] = {'cpu': (256, 16384), 'cuda': (4096, 32768)}
# A block's columns are screened in groups of this many by their maximum (see _RunningTopK).
GROUP_SIZE = 8
# Candidates a row may collect, as a multiple of k, before the running top-k is recomputed.
PENDING_LIMIT = 2


class SimilarRows(NamedTuple):
    """The ``k`` most similar rows of each row, most similar first (like ``torch.topk``).

    Attributes:
        values (Tensor): ``(n, k)`` cosine similarities, float32.
        indices (Tensor): ``(n, k)`` global row indices, long.
    """

    values: Tensor
    indices: Tensor


class _RunningTopK:
    """The ``k`` best scores (and their global columns) of each of ``c`` query rows, fed one block at a time.

    A full ``torch.topk`` over every block would cost more than the matrix product that made it. Instead each
    row keeps a threshold: its current ``k``-th best score, below which nothing can enter its top-k. A block's
    columns are split into groups of ``GROUP_SIZE`` (column ``j`` belongs to group ``j mod (width / GROUP_SIZE)``)
    and one pass takes every group's maximum; only the groups whose maximum beats the threshold are read again.
    Their scores wait as candidates until there are ``PENDING_LIMIT * k`` of them, when one ``topk`` merges
    them into the running best. After the first few blocks a block holds only about ``k * width / seen`` scores
    above the threshold, so the cost per score is one ``amax`` pass.

    A row that does not know ``k`` scores yet (threshold ``-inf``) takes the ``k``-th largest group maximum of
    the block as its threshold: ``k`` groups reach it, so at least ``k`` scores of the block are at least that
    large.

    Ties are broken arbitrarily: the values returned are always the exact top-k values, and every index
    returned holds the value returned with it.

    Args:
        values (Tensor): ``(c, k)`` running best scores (``-inf`` where none yet); updated in place.
        indices (Tensor): ``(c, k)`` their global columns (-1 where none yet); updated in place.
    """

    def __init__(self, values: Tensor, indices: Tensor) -> None:
        self.values, self.indices = values, indices
        self.k = values.shape[1]
        self.threshold = values.amin(dim=1)  # (c,)
        self.pending_values: List[Tensor] = []
        self.pending_indices: List[Tensor] = []
        self.pending_width = 0

    def add(self, scores: Tensor, first_column: int) -> None:
        """Offer a block of scores whose column ``j`` is global column ``first_column + j``.

        Args:
            scores (Tensor): ``(c, w)`` scores, ``w`` a multiple of ``GROUP_SIZE``; padding holds ``-inf``.
            first_column (int): Global index of the block's first column.
        """
        num_rows, width = scores.shape
        num_groups = width // GROUP_SIZE
        grouped = scores.view(num_rows, GROUP_SIZE, num_groups)  # [:, t, j] is column j + t * (w / G)
        group_max = grouped.amax(dim=1)  # (c, w / G)
        threshold = self.threshold
        unfilled = threshold == -math.inf  # (c,)
        any_unfilled = bool(unfilled.any())
        if num_groups >= self.k and any_unfilled:
            block_floor = group_max.topk(self.k, dim=1, sorted=False).values.amin(dim=1)  # (c,)
            # strict '>' below must keep scores equal to the floor: compare with the next float down
            block_floor = block_floor.nextafter(torch.full_like(block_floor, -math.inf))
            threshold = torch.where(unfilled, block_floor, threshold)
        rows, groups = (group_max > threshold[:, None]).nonzero(as_tuple=True)  # (H,), (H,) sorted by row
        if rows.numel():
            group_scores = grouped[rows, :, groups]  # (H, G) the scores of each group that passed
            # keep the scores above their row's threshold: (E,), still sorted by row
            kept = (group_scores > threshold[rows, None]).view(-1).nonzero().squeeze(1)
            hit, member = kept // GROUP_SIZE, kept % GROUP_SIZE
            kept_rows = rows[hit]
            per_row = torch.bincount(kept_rows, minlength=num_rows)  # (c,)
            slot = torch.arange(kept.numel(), device=kept.device) - (per_row.cumsum(0) - per_row)[kept_rows]
            padded_values = scores.new_full((num_rows, int(per_row.max())), -math.inf)  # (c, max per row)
            padded_indices = self.indices.new_full(padded_values.shape, -1)
            padded_values[kept_rows, slot] = group_scores.view(-1)[kept]
            padded_indices[kept_rows, slot] = first_column + groups[hit] + member * num_groups
            self.pending_values.append(padded_values)
            self.pending_indices.append(padded_indices)
            self.pending_width += padded_values.shape[1]
        if self.pending_width >= PENDING_LIMIT * self.k or any_unfilled:
            self.flush()

    def flush(self) -> None:
        """Merge the pending candidates into the running best and raise the thresholds."""
        if not self.pending_values:
            return
        values, positions = torch.cat([self.values, *self.pending_values], dim=1).topk(self.k, dim=1,
                                                                                       sorted=False)  # (c, k)
        self.indices.copy_(torch.cat([self.indices, *self.pending_indices], dim=1).gather(1, positions))
        self.values.copy_(values)
        self.threshold = values.amin(dim=1)
        self.pending_values, self.pending_indices, self.pending_width = [], [], 0


def _shard_layout(num_local_rows: int, row_offset: int, sharded: bool, device: torch.device) -> List[Tuple[int, int]]:
    """``(row_offset, num_rows)`` of every rank's shard, in rank order (only this rank's when not sharded)."""
    local = torch.tensor([[row_offset, num_local_rows]], device=device)  # (1, 2)
    shards = all_gather_rows(local) if sharded else local  # (W, 2)
    return [(offset, size) for offset, size in shards.tolist()]


def _score_block(queries: Tensor, keys: Tensor, buffer: Tensor) -> Tensor:
    """Cosine scores of unit rows, ``(c, D) x (D, b) -> (c, w)``, ``w`` = ``b`` rounded up to ``GROUP_SIZE``.

    The block lives in ``buffer``; its padding columns hold ``-inf``.
    """
    num_queries, num_keys = queries.shape[0], keys.shape[0]
    width = -(-num_keys // GROUP_SIZE) * GROUP_SIZE
    scores = buffer[:num_queries * width].view(num_queries, width)
    torch.mm(queries, keys.t(), out=scores[:, :num_keys])  # (c, D) x (D, b) -> (c, b)
    scores[:, num_keys:].fill_(-math.inf)
    return scores


@torch.no_grad()
def top_k_similar_rows(rows_local: Tensor,
                       k: int,
                       chunk_size: Optional[int] = None,
                       key_block_size: Optional[int] = None,
                       row_offset: int = 0,
                       exclude_self: bool = True,
                       sharded: bool = False,
                       progress: bool = False) -> SimilarRows:
    """For every row of ``rows_local``, the ``k`` rows of the whole table with the highest cosine similarity.

    These are the hard classes ``N_k(i)`` of the full classifier's label smoothing (Eq. 2-3). The work runs on
    ``rows_local``'s device; besides the inputs and the ``(n, k)`` result it needs memory for one
    ``chunk_size x key_block_size`` block of scores and ``O(chunk_size x k)`` candidates, whatever ``N``.

    With ``sharded=True`` this is a collective: every rank of the default process group calls it with its own
    shard (shards may differ in size), broadcasts it in turn, and gets the top-k of its own rows over all ``N``
    rows.

    Example::

        table = torch.randn(100_000, 128)
        hard = top_k_similar_rows(table, k=100)   # hard.indices: (100000, 100)

    Args:
        rows_local (Tensor): ``(n, D)`` rows of this rank (all rows unless sharded); need not be normalised.
        k (int): Similar rows per row.
        chunk_size (int, optional): Query rows per block. Defaults to 256 on the CPU, 4096 on CUDA.
        key_block_size (int, optional): Key rows per block. Defaults to 16384 on the CPU, 32768 on CUDA.
        row_offset (int): Global index of ``rows_local[0]``. Defaults to 0.
        exclude_self (bool): Leave each row out of its own top-k. Defaults to True.
        sharded (bool): ``rows_local`` is this rank's shard of a table split over all ranks. Defaults to False.
        progress (bool): Show the search's progress on rank 0 (its rows, counted once per shard searched, with
            rate and ETA) and log its duration. Defaults to False.

    Returns:
        SimilarRows: ``(n, k)`` similarities and global indices, most similar first.

    Raises:
        ValueError: If ``k`` is not in ``[1, N - 1]`` (``[1, N]`` with ``exclude_self=False``), or a block size
            is not positive.
    """
    default_chunk, default_block = DEFAULT_BLOCKS.get(rows_local.device.type, DEFAULT_BLOCKS['cpu'])
    chunk_size = default_chunk if chunk_size is None else chunk_size
    key_block_size = default_block if key_block_size is None else key_block_size
    if chunk_size <= 0 or key_block_size <= 0:
        raise ValueError(f'chunk_size={chunk_size} and key_block_size={key_block_size} must be positive: they '
                         'are the numbers of rows compared at once.')
    num_local_rows = rows_local.shape[0]
    shards = _shard_layout(num_local_rows, row_offset, sharded, rows_local.device)
    num_candidates = sum(size for _, size in shards) - int(exclude_self)
    if not 0 < k <= num_candidates:
        raise ValueError(f'k={k} similar rows were asked for, but each row has {num_candidates} other rows to '
                         f'choose from: use a k in [1, {num_candidates}] (the paper uses 100).')
    queries = F.normalize(rows_local.float(), dim=1)  # (n, D) unit rows
    values = queries.new_full((num_local_rows, k), -math.inf)
    indices = torch.full((num_local_rows, k), -1, dtype=torch.long, device=queries.device)
    block_width = -(-key_block_size // GROUP_SIZE) * GROUP_SIZE
    buffer = queries.new_empty(min(chunk_size, num_local_rows) * block_width)
    rank = get_rank() if sharded else 0
    num_searched_shards = sum(size > 0 for _, size in shards)
    task = 'hard-class search' if num_searched_shards == 1 else (
        f'hard-class search ({num_searched_shards} shards, rows counted once per shard)')
    search_progress = PassProgress(num_local_rows * num_searched_shards, task, unit='rows', disable=not progress)
    for shard_rank, (shard_offset, shard_size) in enumerate(shards):
        if shard_size == 0:
            continue
        keys = queries if shard_rank == rank else queries.new_empty((shard_size, queries.shape[1]))
        if sharded:
            broadcast(keys, src=shard_rank)
        for start in range(0, num_local_rows, chunk_size):
            stop = min(start + chunk_size, num_local_rows)
            running = _RunningTopK(values[start:stop], indices[start:stop])
            for key_start in range(0, shard_size, block_width):
                key_stop = min(key_start + block_width, shard_size)
                scores = _score_block(queries[start:stop], keys[key_start:key_stop], buffer)  # (c, w)
                if exclude_self and shard_rank == rank:
                    low, high = max(start, key_start), min(stop, key_stop)
                    if low < high:  # the block holds some of these rows themselves
                        scores[low - start:high - start, low - key_start:high - key_start].diagonal().fill_(-math.inf)
                running.add(scores, shard_offset + key_start)
            running.flush()
            search_progress.update(stop - start)
    search_progress.finish()
    values, order = values.sort(dim=1, descending=True)
    return SimilarRows(values, indices.gather(1, order))
