"""Storage of one row per training instance, shared by every head of this package.

PIC's classifier (PIC Eq. 1), the full classifier's sharded weight matrix and NPID's memory bank (NPID Eq. 2)
all keep one ``D``-dim row per training image. They differ in how a row is updated (an SGD step, a momentum
average, an overwrite), not in how rows are stored, placed, sharded, gathered, written back and saved: that is
:class:`RowStorage`. The SGD state of trained rows is :class:`~pic_plugin.models.utils.lazy_sgd_rows.LazySGDRows`,
built on it.

The rows are plain tensors, not parameters or buffers: ``model.to(device)`` does not copy a 1.28M-row table
around, DistributedDataParallel neither broadcasts nor all-reduces it, and a table placed in host memory stays
there. Only the rows a step needs travel to the compute device. They are saved through the module's
``state_dict`` like any other weight, so mmengine's checkpoints hold them; the rows of a sharded table are saved
by ``ShardedTableHook``, which assembles the whole table for rank 0's checkpoints.

A step's rows are chosen on the host: the instance indices come from the data samples' metainfo, and their
range check, the recent-negative queue and the rows' last-update steps (a ``host_columns`` column) stay in host
memory, so no decision of a step reads a value back from the GPU. The indices go to the GPU through pinned
memory without blocking, on a copy stream beside the compute (:func:`to_device`); a host-placed table's rows
travel the same way, gathered into a pinned buffer, and come back through one (:func:`to_host_later`) whose
scatter into the table waits until the table is next read (:meth:`RowStorage.finish_writes`), by then long
copied.
"""
import functools
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_reduce, get_dist_info
from torch import Tensor, nn

from .gather import host_group

PLACEMENTS = ('device', 'host')
INITS = ('normal', 'unit')
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


def power_of_two_at_least(count: int) -> int:
    """The smallest power of two ``>= count`` (1 for ``count <= 1``)."""
    return 1 << max(0, count - 1).bit_length()


def ranks_on_this_node() -> int:
    """Processes of this job on this node, as its launcher tells them: torchrun's ``LOCAL_WORLD_SIZE`` (also
    ``tools/dist_train.sh``); in a distributed job without it, Open MPI's ``OMPI_COMM_WORLD_LOCAL_SIZE`` or slurm's
    ``SLURM_STEP_TASKS_PER_NODE`` (``'4(x2),2'``: the most on any node of the step); 1 otherwise."""
    if 'LOCAL_WORLD_SIZE' in os.environ:
        return int(os.environ['LOCAL_WORLD_SIZE'])
    if get_dist_info()[1] == 1:
        return 1
    if 'OMPI_COMM_WORLD_LOCAL_SIZE' in os.environ:
        return int(os.environ['OMPI_COMM_WORLD_LOCAL_SIZE'])
    slurm_tasks = os.environ.get('SLURM_STEP_TASKS_PER_NODE')
    if slurm_tasks:
        return max(int(count.split('(')[0]) for count in slurm_tasks.split(','))
    return 1


def shard_sizes(num_rows: int, world_size: int) -> List[int]:
    """Rows of each rank when ``num_rows`` are split evenly over ``world_size`` ranks, in rank order.

    Rank ``r`` owns a contiguous block; the first ``num_rows % world_size`` ranks own one row more (the split of
    ``torch.tensor_split``).
    """
    return [num_rows // world_size + (rank < num_rows % world_size) for rank in range(world_size)]


@functools.lru_cache(maxsize=None)
def copy_stream(device_index: int) -> 'torch.cuda.Stream':
    """The side stream that carries the host <-> GPU copies of rows and indices on one GPU, made once."""
    return torch.cuda.Stream(device_index)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; from the host to a GPU through pinned memory, without blocking.

    The copy runs on the GPU's :func:`copy_stream`, beside the work queued before it on the current stream (the
    backbone's forward); the current stream waits for it only where the copy is used. torch's pinned host
    allocator keeps the pinned copy until the transfer is done, so the caller may drop it.
    """
    device = torch.device(device)
    if tensor.device == device:
        return tensor
    if device.type == 'cuda' and tensor.device.type == 'cpu':
        pinned = tensor if tensor.is_pinned() else tensor.pin_memory()
        current = torch.cuda.current_stream(device)
        side = copy_stream(current.device_index)
        with torch.cuda.stream(side):
            copied = pinned.to(device, non_blocking=True)
        current.wait_stream(side)
        copied.record_stream(current)  # allocated on the side stream, used on the current one
        return copied
    return tensor.to(device)


def to_host_later(rows: Tensor, staged: Tensor) -> 'torch.cuda.Event':
    """Start copying GPU ``rows`` into the pinned host tensor ``staged`` on the :func:`copy_stream`, once the work
    queued so far has made them; return the event that marks the end of the copy."""
    current = torch.cuda.current_stream(rows.device)
    side = copy_stream(current.device_index)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        staged.copy_(rows, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(side)
    rows.record_stream(side)  # the current stream may free the rows before the side stream has read them
    return copied


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


def lookup_first(values: Tensor, first: Tensor, queries: Tensor) -> Tensor:
    """Where each query first occurs, from :func:`first_occurrences`'s sorted ``values`` and ``first`` positions:
    ``first[j]`` where ``values[j] == query``, -1 where no value is: ``(U,), (U,), (Q,) -> (Q,)``."""
    at = torch.searchsorted(values, queries).clamp(max=values.numel() - 1)  # (Q,)
    return torch.where(values[at] == queries, first[at], -1)


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


class RowStorage(nn.Module):
    """``num_rows x dim`` rows (and optional per-row columns), placed, sharded, gathered, written and saved.

    Args:
        num_rows (int): Rows in the whole table (over all ranks): the number of training instances.
        dim (int): Length of one row.
        init (str): ``'normal'`` draws every entry from N(0, ``init_std``^2), as the PIC release does (rows of
            norm about ``0.01 * sqrt(dim)``: small rows turn fast under a cosine loss, see ContrastivePriorHook);
            ``'unit'`` draws random unit vectors, as NPID initialises its memory bank. Either is one draw over
            all ``num_rows`` rows whatever the number of ranks (see :func:`fill_standard_normal_rows`), seeded
            from torch's global generator (the runner's ``randomness.seed``). Defaults to 'normal'.
        init_std (float): Standard deviation of the ``'normal'`` init. Defaults to 0.01.
        placement (str): ``'device'`` keeps the rows on the device the features come from; ``'host'`` keeps
            them in host memory (pinned when CUDA is present) and moves only the rows of a step.
            Defaults to 'device'.
        sharded (bool): Split the rows evenly over the ranks (rank ``r`` owns a contiguous block; the first
            ``num_rows % world_size`` ranks own one row more). Otherwise every rank holds all rows.
            Defaults to False.
        dtype (torch.dtype): Type of the rows. Defaults to torch.float32.
        columns (dict, optional): More per-row tensors, ``name -> (trailing shape, dtype)``, zero-initialised
            (e.g. the SGD momentum of :class:`LazySGDRows`). Defaults to None.
        host_columns (Sequence[str]): Columns that stay in host memory whatever the placement, because the host
            reads them to plan a step (the last-update steps of :class:`LazySGDRows`). Defaults to ().
    """

    def __init__(self,
                 num_rows: int,
                 dim: int,
                 init: str = 'normal',
                 init_std: float = 0.01,
                 placement: str = 'device',
                 sharded: bool = False,
                 dtype: torch.dtype = torch.float32,
                 columns: Optional[Dict[str, Tuple[Tuple[int, ...], torch.dtype]]] = None,
                 host_columns: Sequence[str] = ()) -> None:
        super().__init__()
        if not isinstance(num_rows, int) or num_rows <= 0 or dim <= 0:
            raise ValueError(f'the rows need positive num_rows and dim, got num_rows={num_rows!r}, dim={dim}: '
                             "set the head's num_classes to the size of the training set, or to 'auto' (then "
                             "InstanceCountCheckHook sets the training set's size before training).")
        if placement not in PLACEMENTS:
            raise ValueError(f'placement={placement!r} is not one of {PLACEMENTS}.')
        if init not in INITS:
            raise ValueError(f'init={init!r} is not one of {INITS}.')
        rank, world_size = get_dist_info()
        self.num_rows = num_rows
        self.dim = dim
        self.placement = placement
        self.world_size = world_size if sharded else 1
        sizes = shard_sizes(num_rows, self.world_size)
        shard_rank = rank if sharded else 0
        self.row_offset = sum(sizes[:shard_rank])
        self.num_local_rows = sizes[shard_rank]
        shapes = {'weight': ((dim, ), dtype), **(columns or {})}
        self.host_columns = tuple(host_columns)
        # the per-row tensors by name; reading one as an attribute (``rows.weight``) goes through columns()
        self._columns: Dict[str, Tensor] = {}
        # writes of host rows copied back from a GPU: (column, host indices, pinned rows, the copy's CUDA event)
        self._pending_writes: List[Tuple[str, Tensor, Tensor, torch.cuda.Event]] = []
        pin = placement == 'host' and torch.cuda.is_available()
        self._check_host_memory(shapes, pin)
        for name, (trailing, column_dtype) in shapes.items():
            self._columns[name] = torch.zeros((self.num_local_rows, ) + tuple(trailing), dtype=column_dtype,
                                              pin_memory=pin and name not in self.host_columns)
        weight = self._columns['weight']
        seed = int(torch.randint(2**62, ()))  # alike on all ranks, as the runner seeds them (diff_rank_seed=False)
        fill_standard_normal_rows(weight, self.row_offset, seed)
        if init == 'normal':
            weight.mul_(init_std)
        else:
            weight.copy_(nn.functional.normalize(weight, dim=1))

    def __getattr__(self, name: str):
        """A column read as an attribute (``rows.weight``) is :meth:`columns`'s: the table with every row in it."""
        columns = self.__dict__.get('_columns')
        if columns is not None and name in columns:
            return self.columns()[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        columns = self.__dict__.get('_columns')
        if columns is not None and name in columns:
            raise AttributeError(f'{name!r} is a column of the table and cannot be replaced: change its rows with '
                                 f'write(...), or in place through columns()[{name!r}].')
        super().__setattr__(name, value)

    @property
    def column_names(self) -> Tuple[str, ...]:
        """The columns' names, ``'weight'`` first."""
        return tuple(self._columns)

    @property
    def device(self) -> torch.device:
        """Where the rows live (``'weight'``'s device)."""
        return self._columns['weight'].device

    def _check_host_memory(self, shapes: Dict[str, Tuple[Tuple[int, ...], torch.dtype]], pin: bool) -> None:
        """Refuse a table larger than the host memory that is available, saying how much it needs.

        Every rank on this node (:func:`ranks_on_this_node`) allocates its table at the same time, so the check
        counts all of them; pinned columns come from CUDA's host allocator, in powers of two.
        """
        column_bytes = []
        for name, (trailing, dtype) in shapes.items():
            size = self.num_local_rows * torch.Size(trailing).numel() * dtype.itemsize
            column_bytes.append(power_of_two_at_least(size) if pin and name not in self.host_columns else size)
        ranks_on_node = ranks_on_this_node()
        needed, available = sum(column_bytes) * ranks_on_node, available_host_memory()
        if available is not None and needed > available:
            raise MemoryError(
                f'a table of {self.num_local_rows:,} rows x {self.dim} (columns {", ".join(shapes)}'
                f'{", pinned" if pin else ""}) needs {needed / 2**30:.1f} GiB on this node ({ranks_on_node} rank(s) '
                f'of {sum(column_bytes) / 2**30:.1f} GiB) but only {available / 2**30:.1f} GiB of host memory is '
                'available: shard the rows over more ranks (sharded=True), or use a machine with more memory.')

    def _check_device_memory(self, device: torch.device) -> None:
        """Refuse to move a table to an accelerator that cannot hold it, saying how much it needs."""
        if device.type != 'cuda':
            return
        needed = sum(t.numel() * t.element_size() for name, t in self.columns().items()
                     if name not in self.host_columns)
        free, _ = torch.cuda.mem_get_info(device)
        if needed > free:
            raise MemoryError(f'the table needs {needed / 2**30:.1f} GiB on {device} but only {free / 2**30:.1f} GiB '
                              "is free: set the head's placement='host' (rows stay in pinned host memory and only a "
                              "step's rows move), or shard the rows over more GPUs (sharded=True).")

    def extra_repr(self) -> str:
        return (f'num_rows={self.num_rows}, dim={self.dim}, placement={self.placement!r}, '
                f'local_rows=[{self.row_offset}, {self.row_offset + self.num_local_rows})')

    def columns(self) -> Dict[str, Tensor]:
        """This rank's per-row tensors by name, ``'weight'`` first, with every write done: the whole table, for
        reads and writes from outside a training step (hooks, checkpoints, tests)."""
        self.finish_writes()
        return dict(self._columns)

    def place_on(self, device: torch.device) -> None:
        """With ``placement='device'``, move the rows to ``device`` (the features' device) once; the
        ``host_columns`` stay."""
        if self.placement == 'device' and self.device != device:
            self._check_device_memory(device)
            for name, tensor in self.columns().items():
                if name not in self.host_columns:
                    self._columns[name] = tensor.to(device)

    def check_range(self, global_indices: Tensor) -> None:
        """Raise on every rank if a global row index (a dataset ``sample_idx``) of any rank lies outside
        ``[0, num_rows)``: a collective, so that no rank is left waiting for the others in the next one.

        The check runs on the host (give host indices: a GPU tensor would be read back) and its collective goes
        through :func:`~pic_plugin.models.utils.gather.host_group`.
        """
        global_indices = global_indices.cpu()
        if global_indices.numel():
            bounds = torch.stack([-global_indices.min(), global_indices.max()]).long()  # (2,)
        else:
            bounds = torch.tensor([0, -1])
        all_reduce(bounds, op='max', group=host_group())  # the identity without a process group
        low, high = -int(bounds[0]), int(bounds[1])
        if low < 0 or high >= self.num_rows:
            bad = low if low < 0 else high
            raise ValueError(f'sample_idx {bad} is out of range for a table of {self.num_rows} rows: the head\'s '
                             'num_classes must equal the number of training images, and every index must come '
                             'from the training set.')

    def to_local(self, global_indices: Tensor) -> Tensor:
        """Map global row indices (dataset ``sample_idx``) to positions inside this rank's shard, on the host.

        Raises:
            ValueError: If an index lies outside ``[0, num_rows)`` or outside this rank's shard.
        """
        global_indices = global_indices.cpu().long()
        self.check_range(global_indices)
        local = global_indices - self.row_offset
        if local.numel() and (int(local.min()) < 0 or int(local.max()) >= self.num_local_rows):
            raise ValueError(f'row indices [{int(global_indices.min())}, {int(global_indices.max())}] are not all '
                             f'in this rank\'s shard [{self.row_offset}, {self.row_offset + self.num_local_rows}).')
        return local

    def gather(self, local_indices: Tensor, device: torch.device, name: str = 'weight') -> Tensor:
        """Copy the rows ``local_indices`` of column ``name`` to ``device``: ``(R,) -> (R, ...)``.

        Host rows bound for a GPU are gathered into pinned memory, so their copy does not block.
        """
        self.finish_writes()
        column = self._columns[name]
        local_indices = to_device(local_indices, column.device)
        if column.device.type == 'cpu' and torch.device(device).type == 'cuda':
            staged = torch.empty((local_indices.numel(), ) + column.shape[1:], dtype=column.dtype, pin_memory=True)
            return to_device(torch.index_select(column, 0, local_indices, out=staged), device)
        return column.index_select(0, local_indices).to(device)

    def write(self, local_indices: Tensor, **values: Tensor) -> None:
        """Write rows of any columns, e.g. ``write(idx, weight=w)``; the indices must be distinct.

        Rows from a GPU into host memory come back through pinned memory without blocking; their scatter into
        the table waits for :meth:`finish_writes`, which every read of the table calls first.
        """
        self.finish_writes()
        for name, rows in values.items():
            column = self._columns[name]
            indices = to_device(local_indices, column.device)
            if column.device.type == 'cpu' and rows.device.type == 'cuda':
                staged = torch.empty(rows.shape, dtype=column.dtype, pin_memory=True)
                self._pending_writes.append((name, indices, staged, to_host_later(rows, staged)))
            else:
                column.index_copy_(0, indices, rows.to(column.device, column.dtype))

    def finish_writes(self) -> None:
        """Scatter into the host table the rows whose copy back from a GPU :meth:`write` started."""
        pending, self._pending_writes = self._pending_writes, []
        for name, indices, staged, copied in pending:
            copied.synchronize()
            self._columns[name].index_copy_(0, indices, staged)

    def assign(self, local_indices: Tensor, weight: Tensor) -> None:
        """Give rows new values from outside their update rule (the contrastive prior): here, a plain write."""
        self.write(local_indices, weight=weight)

    def state_keys(self) -> Tuple[str, ...]:
        """The names this module's entries of a (whole-table) state dict have."""
        return self.column_names

    def _save_to_state_dict(self, destination: Dict[str, Tensor], prefix: str, keep_vars: bool) -> None:
        # A sharded table is not in the state dict: no rank holds it whole, and mmengine broadcasts every state-dict
        # entry from rank 0 when training starts, which would overwrite (or, for shards of unequal size, break on)
        # the other ranks' rows. ShardedTableHook puts the whole table into rank 0's checkpoints.
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.world_size > 1:
            return
        for name, tensor in self.columns().items():  # with every write done
            destination[prefix + name] = tensor.detach()

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        # no parameters, buffers or children: nn.Module's loader would only list these keys as unexpected
        if strict:
            known = {prefix + name for name in self.state_keys()}
            unexpected_keys.extend(key for key in state_dict if key.startswith(prefix) and key not in known)
        for name, tensor in self.columns().items():  # pending writes first, so they cannot land on loaded rows
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                if self.world_size > 1:
                    error_msgs.append(f'{key}: the checkpoint holds none of this sharded table\'s rows; it was saved '
                                      'without ShardedTableHook in custom_hooks, which assembles them.')
                continue
            saved = state_dict[key]
            if saved.shape[1:] != tensor.shape[1:] or saved.shape[0] != self.num_rows:
                error_msgs.append(
                    f'{key}: the checkpoint holds {tuple(saved.shape)} rows but this table has {self.num_rows} '
                    f'rows of dim {self.dim}: the data set size changed since the checkpoint was saved, or a sharded '
                    'run saved only its own rows (add ShardedTableHook to custom_hooks; it gathers every shard '
                    'before each checkpoint).')
                continue
            # the checkpoint holds the whole table: take this rank's shard, so that a run resumes on any number
            # of ranks
            tensor.copy_(saved[self.row_offset:self.row_offset + self.num_local_rows])
