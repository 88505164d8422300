"""The table of one row per training instance, shared by every head of this package.

PIC's classifier (PIC Eq. 1), the full classifier's sharded weight matrix and NPID's memory bank (NPID Eq. 2)
all keep one ``D``-dim row per training image. They differ in how a row is updated (an SGD step, a momentum
average, an overwrite), not in how rows are stored, placed, sharded, gathered, written back and saved. This
module owns the latter; each head and :class:`~pic_plugin.engine.optimizers.LazyCorrectedSGD` own only their
update rule.

The rows are plain tensors, not parameters or buffers: ``model.to(device)`` does not copy a 1.28M-row table
around, DistributedDataParallel neither broadcasts nor all-reduces it, and a table placed in host memory stays
there. Only the rows a step needs travel to the compute device. They are saved through the module's
``state_dict`` like any other weight, so mmengine's checkpoints hold them.
"""
from typing import Dict, List, NamedTuple, Optional, Protocol, Tuple

import torch
import torch.distributed as dist
from mmengine.dist import get_dist_info
from torch import Tensor, nn

from pic_plugin.utils.progress import track_progress

PLACEMENTS = ('device', 'host')
# Rows drawn from one seed at initialisation: the unit that makes the draw independent of the sharding.
INIT_BLOCK_ROWS = 4096


def available_host_memory() -> Optional[int]:
    """``MemAvailable`` of /proc/meminfo in bytes, or None where the system does not report it."""
    try:
        with open('/proc/meminfo') as meminfo:
            for line in meminfo:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def shard_sizes(num_rows: int, world_size: int) -> List[int]:
    """Rows of each rank when ``num_rows`` are split evenly over ``world_size`` ranks, in rank order.

    Rank ``r`` owns a contiguous block; the first ``num_rows % world_size`` ranks own one row more (the split of
    ``torch.tensor_split``).
    """
    return [num_rows // world_size + (rank < num_rows % world_size) for rank in range(world_size)]


def first_occurrences(indices: Tensor) -> Tuple[Tensor, Tensor]:
    """The distinct values of ``indices`` (sorted) and the position of each one's first occurrence.

    Integer min-reduction, so the result is the same on every rank and device (unlike a scatter of
    duplicates, whose winner is unspecified): a row written from a batch that holds its image twice gets the
    first one.
    """
    unique_indices, inverse = torch.unique(indices, return_inverse=True)  # (U,), (G,)
    positions = torch.arange(indices.numel(), device=indices.device)  # (G,)
    first = torch.full_like(unique_indices, indices.numel()).scatter_reduce_(0, inverse, positions, reduce='amin')
    return unique_indices, first


def fill_standard_normal_rows(rows: Tensor, first_row: int, seed: int) -> Tensor:
    """Fill ``rows`` with rows ``[first_row, first_row + len(rows))`` of one N(0, 1) draw of a whole table.

    The table is drawn in blocks of ``INIT_BLOCK_ROWS`` rows, block ``b`` from a generator seeded with
    ``seed + b``, so every rank produces exactly its own slice of the same draw: a table sharded over any number
    of ranks starts as the unsharded one does, and no two shards share a row (as they would if every rank drew
    its shard from the same seed). Only one block is held besides ``rows``.

    Args:
        rows (Tensor): ``(R, D)`` host tensor to fill, in its own dtype.
        first_row (int): Global index of ``rows[0]``.
        seed (int): Seed of the whole draw, the same on every rank.

    Returns:
        Tensor: ``rows``.
    """
    num_rows = rows.shape[0]
    for block in range(first_row // INIT_BLOCK_ROWS, -(-(first_row + num_rows) // INIT_BLOCK_ROWS)):
        block_start = block * INIT_BLOCK_ROWS
        values = torch.randn(INIT_BLOCK_ROWS, rows.shape[1], dtype=rows.dtype,
                             generator=torch.Generator().manual_seed(seed + block))  # (INIT_BLOCK_ROWS, D)
        low, high = max(first_row, block_start), min(first_row + num_rows, block_start + INIT_BLOCK_ROWS)
        rows[low - first_row:high - first_row] = values[low - block_start:high - block_start]
    return rows


class RowBatch(NamedTuple):
    """The rows of one training step, gathered for an optimiser update.

    Attributes:
        local_indices (Tensor): ``(R,)`` row positions inside this rank's shard.
        weight (Tensor): ``(R, D)`` leaf tensor on the compute device that requires grad; after ``backward``
            its ``.grad`` is the loss gradient of these rows.
        momentum (Tensor): ``(R, D)`` SGD momentum of these rows, brought to the current step.
    """

    local_indices: Tensor
    weight: Tensor
    momentum: Tensor


class RowUpdater(Protocol):
    """What a table needs from the optimiser that updates its rows (see ``LazyCorrectedSGD``)."""

    def bring_forward(self, weight: Tensor, momentum: Tensor, last_step: Tensor) -> Tuple[Tensor, Tensor]:
        """Return the rows as they would be at the current step had every skipped step touched them."""


class RowTable(nn.Module):
    """``num_rows x dim`` rows, optionally with per-row SGD state, sharded over ranks.

    Args:
        num_rows (int): Rows in the whole table (over all ranks): the number of training instances.
        dim (int): Length of one row.
        init (str): ``'normal'`` draws every entry from N(0, ``init_std``^2), as the PIC release does (rows of
            norm about ``0.01 * sqrt(dim)``: small rows turn fast under a cosine loss, see ContrastivePriorHook);
            ``'unit'`` draws random unit vectors, as NPID initialises its memory bank. Either is one draw over
            all ``num_rows`` rows whatever the number of ranks (see :func:`fill_standard_normal_rows`), seeded
            from torch's global generator (the runner's ``randomness.seed``). Defaults to 'normal'.
        init_std (float): Standard deviation of the ``'normal'`` init. Defaults to 0.01.
        with_optim_state (bool): Keep each row's SGD momentum and the optimiser step of its last update, for
            rows trained by ``LazyCorrectedSGD``. Defaults to True.
        placement (str): ``'device'`` keeps the rows on the device the features come from; ``'host'`` keeps
            them in host memory (pinned when CUDA is present) and moves only the rows of a step.
            Defaults to 'device'.
        sharded (bool): Split the rows evenly over the ranks (rank ``r`` owns a contiguous block; the first
            ``num_rows % world_size`` ranks own one row more). Otherwise every rank holds all rows.
            Defaults to False.
        dtype (torch.dtype): Type of the rows and their momentum. Defaults to torch.float32.
    """

    def __init__(self,
                 num_rows: int,
                 dim: int,
                 init: str = 'normal',
                 init_std: float = 0.01,
                 with_optim_state: bool = True,
                 placement: str = 'device',
                 sharded: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not isinstance(num_rows, int) or num_rows <= 0 or dim <= 0:
            raise ValueError(f'RowTable needs positive num_rows and dim, got num_rows={num_rows!r}, dim={dim}: '
                             "set the head's num_classes to the size of the training set, or to 'auto' (then "
                             "InstanceCountCheckHook sets the training set's size before training).")
        if placement not in PLACEMENTS:
            raise ValueError(f'placement={placement!r} is not one of {PLACEMENTS}.')
        if init not in ('normal', 'unit'):
            raise ValueError(f"init={init!r} is not 'normal' or 'unit'.")
        rank, world_size = get_dist_info()
        self.num_rows = num_rows
        self.dim = dim
        self.placement = placement
        self.world_size = world_size if sharded else 1
        sizes = shard_sizes(num_rows, self.world_size)
        shard_rank = rank if sharded else 0
        self.row_offset = sum(sizes[:shard_rank])
        self.num_local_rows = sizes[shard_rank]
        self.updater: Optional[RowUpdater] = None
        self.pending: Optional[RowBatch] = None
        # rank 0's copy of every shard, gathered for the next checkpoint (see gather_shards_for_checkpoint)
        self.gathered: Optional[Dict[str, Tensor]] = None

        pin = placement == 'host' and torch.cuda.is_available()
        self._check_host_memory(dtype, with_optim_state)
        self.weight = self._allocate((self.num_local_rows, dim), dtype, pin)
        seed = int(torch.randint(2**62, ()))  # alike on all ranks, as the runner seeds them (diff_rank_seed=False)
        fill_standard_normal_rows(self.weight, self.row_offset, seed)
        if init == 'normal':
            self.weight.mul_(init_std)
        else:
            self.weight.copy_(nn.functional.normalize(self.weight, dim=1))
        self.momentum: Optional[Tensor] = None
        self.last_step: Optional[Tensor] = None
        if with_optim_state:
            self.momentum = self._allocate((self.num_local_rows, dim), dtype, pin).zero_()
            self.last_step = self._allocate((self.num_local_rows, ), torch.int64, pin).zero_()

    def nbytes(self, dtype: torch.dtype, with_optim_state: bool) -> int:
        """Bytes of this rank's rows (and their momentum and last-update steps)."""
        row_bytes = self.dim * dtype.itemsize * (2 if with_optim_state else 1) + (8 if with_optim_state else 0)
        return self.num_local_rows * row_bytes

    def _check_host_memory(self, dtype: torch.dtype, with_optim_state: bool) -> None:
        """Refuse a table larger than the host memory that is available, saying how much it needs."""
        needed, available = self.nbytes(dtype, with_optim_state), available_host_memory()
        if available is not None and needed > available:
            raise MemoryError(
                f'a table of {self.num_local_rows:,} rows x {self.dim} ({dtype}, with_optim_state={with_optim_state}) '
                f'needs {needed / 2**30:.1f} GiB on this rank but only {available / 2**30:.1f} GiB of host memory '
                'is available: shard the rows over more ranks (sharded=True), or use a machine with more memory.')

    def _check_device_memory(self, device: torch.device) -> None:
        """Refuse to move a table to an accelerator that cannot hold it, saying how much it needs."""
        if device.type != 'cuda':
            return
        needed = sum(t.numel() * t.element_size() for t in self._storage().values())
        free, _ = torch.cuda.mem_get_info(device)
        if needed > free:
            raise MemoryError(f'the table needs {needed / 2**30:.1f} GiB on {device} but only {free / 2**30:.1f} GiB '
                              "is free: set the head's placement='host' (rows stay in pinned host memory and only a "
                              "step's rows move), or shard the rows over more GPUs (sharded=True).")

    @staticmethod
    def _allocate(shape: Tuple[int, ...], dtype: torch.dtype, pin: bool) -> Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=pin)

    def extra_repr(self) -> str:
        return (f'num_rows={self.num_rows}, dim={self.dim}, placement={self.placement!r}, '
                f'local_rows=[{self.row_offset}, {self.row_offset + self.num_local_rows})')

    # ---- storage: placement, indexing, gather and write-back -------------------------------------------
    def _storage(self) -> Dict[str, Tensor]:
        return {name: getattr(self, name) for name in ('weight', 'momentum', 'last_step')
                if getattr(self, name) is not None}

    def place_on(self, device: torch.device) -> None:
        """With ``placement='device'``, move the rows to ``device`` (the features' device) once."""
        if self.placement == 'device' and self.weight.device != device:
            self._check_device_memory(device)
            for name, tensor in self._storage().items():
                setattr(self, name, tensor.to(device))

    def check_range(self, global_indices: Tensor) -> None:
        """Raise if a global row index (a dataset ``sample_idx``) lies outside ``[0, num_rows)``."""
        if global_indices.numel() == 0:
            return
        low, high = int(global_indices.min()), int(global_indices.max())
        if low < 0 or high >= self.num_rows:
            bad = low if low < 0 else high
            raise ValueError(f'sample_idx {bad} is out of range for a table of {self.num_rows} rows: the head\'s '
                             'num_classes must equal the number of training images, and every index must come '
                             'from the training set.')

    def to_local(self, global_indices: Tensor) -> Tensor:
        """Map global row indices (dataset ``sample_idx``) to positions inside this rank's shard.

        Raises:
            ValueError: If an index lies outside ``[0, num_rows)`` or outside this rank's shard.
        """
        global_indices = global_indices.long()
        self.check_range(global_indices)
        local = global_indices - self.row_offset
        if local.numel() and (int(local.min()) < 0 or int(local.max()) >= self.num_local_rows):
            raise ValueError(f'row indices [{int(global_indices.min())}, {int(global_indices.max())}] are not all '
                             f'in this rank\'s shard [{self.row_offset}, {self.row_offset + self.num_local_rows}).')
        return local

    def gather(self, local_indices: Tensor, device: torch.device, name: str = 'weight') -> Tensor:
        """Copy the rows ``local_indices`` of ``name`` to ``device``: ``(R,) -> (R, D)``."""
        storage = getattr(self, name)
        return storage.index_select(0, local_indices.to(storage.device)).to(device, non_blocking=True)

    def write(self, local_indices: Tensor, **rows: Tensor) -> None:
        """Write rows back, e.g. ``write(idx, weight=w, momentum=u, last_step=s)``."""
        self.gathered = None
        for name, values in rows.items():
            storage = getattr(self, name)
            storage[local_indices.to(storage.device)] = values.to(storage.device, storage.dtype)

    # ---- rows trained by an optimiser ------------------------------------------------------------------
    def rows_for_update(self, local_indices: Tensor, device: torch.device) -> Tensor:
        """Gather rows, bring them to the current step, and keep them for the optimiser's next ``step()``.

        Returns:
            Tensor: ``(R, D)`` weights that require grad; the loss must be built from them.

        Raises:
            RuntimeError: If no optimiser updates this table (the config's ``optim_wrapper`` is not
                ``LazyCorrectedSGD``), or the rows of the previous step were never updated.
        """
        if self.updater is None or self.momentum is None or self.last_step is None:
            raise RuntimeError('The rows of this instance classifier are trained by LazyCorrectedSGD, but no such '
                               "optimiser is attached: set optim_wrapper=dict(type='LazyCorrectedSGD', "
                               "optimizer=dict(type='SGD', ...)) in the config. (`--amp` of mim train or of "
                               "mmpretrain's tools/train.py replaces it by AmpOptimWrapper, which cannot update "
                               'these rows: train without --amp.)')
        if self.pending is not None:
            raise RuntimeError('The rows gathered in the previous training step were never updated: call the '
                               'optimiser step (optim_wrapper.update_params) after each loss.')
        weight, momentum = self.updater.bring_forward(self.gather(local_indices, device),
                                                      self.gather(local_indices, device, 'momentum'),
                                                      self.gather(local_indices, device, 'last_step'))
        weight.requires_grad_(True)
        self.pending = RowBatch(local_indices, weight, momentum)
        return weight

    def pop_pending(self) -> Optional[RowBatch]:
        """Hand the rows of the current step to the optimiser (and forget them here)."""
        pending, self.pending = self.pending, None
        return pending

    # ---- checkpoints -----------------------------------------------------------------------------------
    def gather_shards_for_checkpoint(self) -> None:
        """Collective: give rank 0 every rank's rows, so that its checkpoint holds the whole table.

        mmengine writes checkpoints from rank 0 only. Call this on all ranks before each save
        (``ShardedTableHook`` does); rank 0's ``state_dict`` then holds all ``num_rows`` rows, and every rank
        takes its own slice back when loading. It costs rank 0 host memory for the whole table, once per save.
        Rank 0 shows the gather's progress in KiB of the whole table (rate, ETA) and logs its duration.
        """
        if self.world_size == 1:
            return
        rank = dist.get_rank()
        shard_size = self.num_rows // self.world_size + 1  # every shard padded to the largest one
        storage = self._storage()
        kibibytes = {name: -(-self.num_rows * tensor.shape[1:].numel() * tensor.element_size() // 1024)
                     for name, tensor in storage.items()}  # of the whole table, rounded up
        gathered = {}
        task = 'sharded table gather for the checkpoint'
        for name, tensor in track_progress(storage.items(), sum(kibibytes.values()), task, unit='KiB',
                                           count=lambda item: kibibytes[item[0]]):
            padded = tensor.new_zeros((shard_size, ) + tensor.shape[1:])
            padded[:tensor.shape[0]] = tensor
            parts = [torch.empty_like(padded) for _ in range(self.world_size)] if rank == 0 else None
            dist.gather(padded, parts, dst=0)
            if rank == 0:
                sizes = shard_sizes(self.num_rows, self.world_size)
                gathered[name] = torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu()
        self.gathered = gathered if rank == 0 else None

    def _save_to_state_dict(self, destination: Dict[str, Tensor], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        rows = self.gathered if self.gathered is not None else self._storage()
        for name, tensor in rows.items():
            destination[prefix + name] = tensor.detach()

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        # The table has no parameters, buffers or children, so the base class has nothing to load; it would
        # only list these keys as unexpected.
        self.gathered = None
        for name, tensor in self._storage().items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            saved = state_dict[key]
            if saved.shape[1:] != tensor.shape[1:] or saved.shape[0] != self.num_rows:
                error_msgs.append(
                    f'{key}: the checkpoint holds {tuple(saved.shape)} rows but this table has {self.num_rows} '
                    f'rows of dim {self.dim}: the data set size changed since the checkpoint was saved, or a sharded '
                    'run saved only its own rows (add ShardedTableHook to custom_hooks; it gathers every shard '
                    'before each checkpoint).')
                continue
            # the checkpoint holds the whole table (see gather_shards_for_checkpoint): take this rank's shard, so
            # that a run resumes on any number of ranks
            tensor.copy_(saved[self.row_offset:self.row_offset + self.num_local_rows])
