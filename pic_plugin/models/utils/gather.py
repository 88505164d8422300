"""Gathering tensors of different lengths across ranks: the one place of this package that does it.

* :func:`all_gather_rows`: every rank gets the concatenation of every rank's rows (indices, features);
* :func:`all_gather_rows_with_grad`: the same, differentiable: each rank gets back the gradient of its own rows
  summed over all ranks (the full classifier's feature gather, its Sec. 3);
* :func:`all_gather_batch`: a step's features and host labels of the global batch, the sizes exchanged once;
* :func:`gather_rows_to_rank0`: rank 0 alone assembles a large table in host memory, a chunk at a time (the
  checkpoint of a sharded table).

All are the identity (or a copy) without a process group, and each sends its tensors through the
backend's device of its group (``mmengine.dist.get_comm_device``: the GPU under NCCL, the CPU under gloo),
whatever device the rows live on. The heads choose each step's rows on the host (instance indices, their range
check, the recent-negative queue): those travel through :func:`host_group`, so that reading them back never
waits for the GPU.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.dist import get_comm_device
from torch import Tensor
from torch.distributed import ProcessGroup

# rows of one message of gather_rows_to_rank0: bounds the memory a checkpoint gather adds on either side
CHUNK_BYTES = 64 * 2**20


def is_distributed() -> bool:
    """A process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_HOST_GROUPS: Dict[ProcessGroup, ProcessGroup] = {}


def host_group() -> Optional[ProcessGroup]:
    """The group of all ranks whose collectives take host tensors: the default group under gloo (None), else a
    gloo group over the same ranks, made once (a collective: every rank's first call must come at the same point).

    Under NCCL a collective of host values would go through the GPU and back, and reading the result would wait
    for every kernel queued before it, the backbone's forward and backward among them.
    """
    if not is_distributed() or dist.get_backend() == 'gloo':
        return None
    world = dist.group.WORLD  # a new default group (a new run in this process) gets its own
    if world not in _HOST_GROUPS:
        _HOST_GROUPS[world] = dist.new_group(backend='gloo')
    return _HOST_GROUPS[world]


def all_sizes(local: Tensor, group: Optional[ProcessGroup] = None) -> List[int]:
    """Rows of ``local`` on every rank of ``group``, in rank order (read back on the host)."""
    size = torch.tensor([local.shape[0]], device=get_comm_device(group))
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, size, group=group)
    return torch.cat(sizes).tolist()


def _all_gather_padded(local: Tensor, sizes: List[int], group: Optional[ProcessGroup] = None) -> Tensor:
    device = get_comm_device(group)
    padded = local.new_zeros((max(sizes), ) + local.shape[1:], device=device)
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)]).to(local.device)


def all_gather_rows(local: Tensor, group: Optional[ProcessGroup] = None,
                    sizes: Optional[List[int]] = None) -> Tensor:
    """Concatenate every rank's ``local`` along dim 0 in rank order; ranks may hold different numbers of rows.

    No autograd: for indices, or features that need no gradient. ``local`` itself without a process group.
    ``group`` (e.g. :func:`host_group` for host tensors) defaults to the default group; ``sizes``, every rank's
    row count when already known, saves their exchange.
    """
    if not is_distributed():
        return local
    return _all_gather_padded(local, sizes or all_sizes(local, group), group)


class _AllGatherRowsWithGrad(torch.autograd.Function):

    @staticmethod
    def forward(ctx, local: Tensor, sizes: Optional[List[int]]) -> Tensor:  # (B_r, ...) -> (B, ...)
        sizes = sizes or all_sizes(local)
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return _all_gather_padded(local, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # (B, ...) -> (B_r, ...)
        summed = grad.contiguous().to(get_comm_device())
        dist.all_reduce(summed)  # every rank's loss terms contribute to every row's gradient
        start = sum(ctx.sizes[:ctx.rank])
        # x world size: DistributedDataParallel averages the backbone's gradients over ranks, so each rank's
        # rows carry the gradient of its local mean loss, exactly as in plain data parallelism.
        return summed[start:start + ctx.sizes[ctx.rank]].to(grad.device) * len(ctx.sizes), None


def all_gather_rows_with_grad(local: Tensor, sizes: Optional[List[int]] = None) -> Tensor:
    """:func:`all_gather_rows` for a float tensor, differentiable: ``(B_r, ...) -> (B, ...)``.

    Backward all-reduces the gradient of the gathered rows and returns this rank's part times the world size
    (see the backward's comment). The identity without a process group. ``sizes``, every rank's row count when
    known on the host (the heads know it from the instance indices), saves reading it back from the device.
    """
    return _AllGatherRowsWithGrad.apply(local, sizes) if is_distributed() else local


def all_gather_batch(feats: Tensor, host_labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Every rank's features (differentiable, through the backend) and host labels (through :func:`host_group`):
    ``(B_r, D), (B_r,) -> (B, D), (B,)``, the inputs themselves without a process group.

    The ranks' batch sizes are exchanged once, from the host labels, and both gathers take them, so that no size
    is read back from the device.
    """
    if not is_distributed():
        return feats, host_labels
    group = host_group()
    sizes = all_sizes(host_labels, group)
    return all_gather_rows_with_grad(feats, sizes), all_gather_rows(host_labels, group, sizes)


def gather_rows_to_rank0(local: Tensor, sizes: List[int],
                         on_chunk: Optional[Callable[[int], None]] = None) -> Optional[Tensor]:
    """Collective: rank 0 assembles the rows of every rank, in rank order, in host memory.

    Rank ``r`` holds ``sizes[r]`` rows. Each rank's rows travel in chunks of about ``CHUNK_BYTES`` (send /
    receive through the backend's device), so besides the whole table on rank 0's host no more than one chunk
    is held on any device at a time.

    Args:
        local (Tensor): ``(sizes[rank], ...)`` this rank's rows, on any device.
        sizes (list[int]): Rows of every rank.
        on_chunk (callable, optional): Called on rank 0 with the rows of each chunk received (progress).

    Returns:
        Tensor | None: On rank 0 the ``(sum(sizes), ...)`` host tensor; None on the other ranks.
    """
    if not is_distributed():
        return local.detach().cpu().clone()
    rank, device = dist.get_rank(), get_comm_device()
    chunk_rows = max(1, CHUNK_BYTES // max(1, local[0:1].numel() * local.element_size()))
    whole = torch.empty((sum(sizes), ) + local.shape[1:], dtype=local.dtype) if rank == 0 else None
    offset = 0
    for source, size in enumerate(sizes):
        for first in range(0, size, chunk_rows):
            rows = min(chunk_rows, size - first)
            if rank == source:
                chunk = local[first:first + rows].to(device)
                if rank == 0:
                    whole[offset + first:offset + first + rows] = chunk.cpu()
                else:
                    dist.send(chunk.contiguous(), dst=0)
            elif rank == 0:
                buffer = torch.empty((rows, ) + local.shape[1:], dtype=local.dtype, device=device)
                dist.recv(buffer, src=source)
                whole[offset + first:offset + first + rows] = buffer.cpu()
            if rank == 0 and on_chunk is not None:
                on_chunk(rows)
        offset += size
    return whole
