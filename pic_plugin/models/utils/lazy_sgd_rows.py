"""Instance rows trained by SGD, with PIC's lazy correction of the steps a row skips (PIC Sec. 2.3).

PIC trains one classifier row ``w_i`` per training image with the same SGD as the network (PIC Eq. 2):

    u_i <- m * u_i + (g_i + lambda * w_i),        w_i <- w_i - eta * u_i.

A row whose image is not in the batch has ``g_i = 0`` but still moves, because of weight decay and momentum.
Updating every row every step costs memory and time linear in the data set, so PIC leaves such rows alone and
catches up when they are next used: with ``g_i = 0`` one step is linear in ``[w_i; u_i]`` (PIC Eq. 3),

    [w_i; u_i] <- A [w_i; u_i],        A = [[1 - eta * lambda, -eta * m], [lambda, m]],

and ``t'`` skipped steps are ``A^t'``. Eq. 3 assumes one learning rate for all of them; with a warm-up and a
cosine schedule every step ``j`` has its own ``A_j``, and a row last written before step ``s`` must be
multiplied by the ordered product ``A_{t-1} ... A_{s+1} A_s`` when it is used before step ``t``.
:class:`TransitionProducts` keeps every ``A_j`` and answers such products for any schedule, exactly and
without inverting anything. :class:`LazySGDRows` holds the rows, their momentum and last-update step, and the
transitions of their steps; ``LazyCorrectedSGD`` only tells it each step's learning rate, momentum and weight
decay.
"""
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from mmengine.dist import all_reduce, get_world_size
from torch import Tensor
from torch.optim.sgd import sgd
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from .row_storage import RowStorage, first_occurrences, lookup_first, power_of_two_at_least, to_device


class TransitionProducts:
    """Products of the per-step SGD transitions of a row that gets no gradient (PIC Eq. 3, any schedule).

    Step ``j`` of SGD (PIC Eq. 2) with learning rate ``eta_j``, momentum ``m_j`` and weight decay ``lambda_j``
    maps a row with zero gradient as ``[w; u] <- A_j [w; u]``, ``A_j = [[1 - eta_j lambda_j, -eta_j m_j],
    [lambda_j, m_j]]``. :meth:`products` returns ``A_{t-1} ... A_s`` for a batch of start steps ``s``.

    The ``A_j`` are the leaves of a segment tree whose every node holds the product of the leaves below it,
    the later child on the left (matrix products do not commute). A query walks all ranges up the tree at
    once, with a left accumulator for the earlier end and a right one for the later end: O(log T) batched
    2 x 2 products, whatever the distance ``t - s``. Nothing is inverted: ``det A_j = m_j``, so prefix
    products divided by inverses would carry factors like ``0.9^-t``, which overflow within a few thousand
    steps. Rows that share a start step share one query.

    Memory: the tree holds ``2 * capacity`` float64 2 x 2 matrices (64 bytes per leaf, ``capacity`` the
    power of two at or above the number of steps), host memory only: 64 MiB for 1M steps. The state dict
    holds the ``T`` leaves (32 bytes per step: 32 MB for 1M steps).

    Args:
        initial_capacity (int): Steps the tree has room for before it doubles (rounded up to a power of
            two). Defaults to 1024.
    """

    def __init__(self, initial_capacity: int = 1024) -> None:
        self.num_steps = 0
        self._pending_hyper_params: List[Tuple[float, float, float]] = []
        self._capacity = 0
        self._num_built = 0  # leaves whose ancestors are up to date
        self._tree = torch.empty(0, 2, 2, dtype=torch.float64)
        self._grow(power_of_two_at_least(initial_capacity))

    def append(self, lr: float, momentum: float, weight_decay: float) -> None:
        """Record ``A_j`` for the next step ``j = num_steps`` (PIC Eq. 3 with this step's ``eta``)."""
        self._pending_hyper_params.append((float(lr), float(momentum), float(weight_decay)))
        self.num_steps += 1

    def products(self, start_steps: Tensor, end_step: int) -> Tensor:
        """Return ``A_{end_step-1} ... A_s`` for every start step ``s`` (the identity where ``s == end_step``).

        Args:
            start_steps (Tensor): ``(R,)`` integer start steps in ``[0, end_step]``.
            end_step (int): Step the rows are brought to, at most ``num_steps``.

        Returns:
            Tensor: ``(R, 2, 2)`` float64 products on the host.
        """
        if not 0 <= end_step <= self.num_steps:
            raise ValueError(f'end_step={end_step} is outside [0, {self.num_steps}]: only the transitions '
                             'of the steps recorded so far can be multiplied.')
        starts, row_to_start = torch.unique(start_steps.long().cpu(), return_inverse=True)  # (U,), (R,)
        if starts.numel() and (int(starts[0]) < 0 or int(starts[-1]) > end_step):
            raise ValueError(f'start steps [{int(starts[0])}, {int(starts[-1])}] are not all in '
                             f'[0, end_step={end_step}].')
        self._build()
        last_node = 2 * self._capacity - 1
        identity = torch.eye(2, dtype=torch.float64).expand(len(starts), 2, 2)
        earlier, later = identity.clone(), identity.clone()  # products of the nodes left and right
        low = starts + self._capacity  # (U,) leaf of the first step of each range
        high = torch.full_like(low, end_step + self._capacity)  # (U,) one past its last leaf
        for _ in range(self._capacity.bit_length()):
            active = low < high  # (U,)
            take_low = active & (low % 2 == 1)  # (U,) the earlier end is a right child: take it, step right
            node = self._tree[low.clamp(max=last_node)]  # (U, 2, 2)
            earlier = torch.where(take_low[:, None, None], node @ earlier, earlier)
            low = low + take_low.long()
            take_high = active & (high % 2 == 1)  # (U,) the later end follows a left child: step left, take it
            high = high - take_high.long()
            node = self._tree[high.clamp(max=last_node)]  # (U, 2, 2)
            later = torch.where(take_high[:, None, None], later @ node, later)
            low, high = low // 2, high // 2
        return (later @ earlier)[row_to_start]  # (U, 2, 2) -> (R, 2, 2)

    def state_dict(self) -> Dict[str, Union[int, Tensor]]:
        """Return ``{'num_steps': T, 'transitions': (T, 2, 2) float64}``, enough to resume exactly."""
        self._build()
        leaves = self._tree[self._capacity:self._capacity + self.num_steps].clone()  # (T, 2, 2)
        return {'num_steps': self.num_steps, 'transitions': leaves}

    def load_state_dict(self, state_dict: Dict[str, Union[int, Tensor]]) -> None:
        """Replace the recorded transitions with those of :meth:`state_dict`."""
        leaves = state_dict['transitions']
        if leaves.shape != (state_dict['num_steps'], 2, 2):
            raise ValueError(f'transitions of shape {tuple(leaves.shape)} do not match num_steps='
                             f'{state_dict["num_steps"]}: the state dict is damaged.')
        self.num_steps = 0
        self._pending_hyper_params = []
        self._grow(max(self._capacity, power_of_two_at_least(len(leaves))))
        self._tree[self._capacity:self._capacity + len(leaves)] = leaves.to(torch.float64)
        self.num_steps = len(leaves)

    def _grow(self, capacity: int) -> None:
        """Reallocate the tree with room for ``capacity`` leaves (a power of two), keeping written leaves."""
        written = self.num_steps - len(self._pending_hyper_params)
        tree = torch.eye(2, dtype=torch.float64).repeat(2 * capacity, 1, 1)  # (2C, 2, 2)
        tree[capacity:capacity + written] = self._tree[self._capacity:self._capacity + written]
        self._tree, self._capacity, self._num_built = tree, capacity, 0

    def _build(self) -> None:
        """Write the pending leaves and recompute the ancestors of every leaf changed since the last build."""
        if self._pending_hyper_params:
            first = self.num_steps - len(self._pending_hyper_params)
            if self.num_steps > self._capacity:
                self._grow(power_of_two_at_least(self.num_steps))
            lr, momentum, weight_decay = torch.tensor(self._pending_hyper_params,
                                                      dtype=torch.float64).unbind(1)  # 3 x (P,)
            leaves = torch.stack([1 - lr * weight_decay, -lr * momentum, weight_decay, momentum], 1)  # (P, 4)
            self._tree[self._capacity + first:self._capacity + self.num_steps] = leaves.view(-1, 2, 2)
            self._pending_hyper_params = []
        low, high = self._capacity + self._num_built, self._capacity + self.num_steps
        while low < high and low > 1:
            low, high = low // 2, (high - 1) // 2 + 1
            # parent = later child @ earlier child: (n, 2, 2) @ (n, 2, 2)
            self._tree[low:high] = self._tree[2 * low + 1:2 * high:2] @ self._tree[2 * low:2 * high:2]
        self._num_built = self.num_steps


class SlotChanges(NamedTuple):
    """How the rows in fixed slots change from one step to the next (host slot positions, see
    :func:`slot_changes`)."""

    arriving: Tensor  # (A,) slots that take a row from the table
    moves_from: Tensor  # (M,) slots whose row moves ...
    moves_to: Tensor  # (M,) ... to these slots
    leaving: Tensor  # (L,) slots whose row goes back to the table


def slot_changes(before: Tensor, after: Tensor) -> SlotChanges:
    """Compare two layouts of rows in slots, ``(R,)`` each (a row in at most one slot, -1 for none).

    A row of ``after`` not in ``before`` arrives; one in both, at another slot, moves; one of ``before`` not in
    ``after`` leaves. Only the changed slots are compared (a row in an unchanged slot is in no other slot).
    """
    changed = (before != after).nonzero().squeeze(1)  # (X,)
    if changed.numel() == 0:
        return SlotChanges(changed, changed, changed, changed)
    old, new = before[changed], after[changed]  # (X,) each, -1 for none
    source = lookup_first(*first_occurrences(old), new)  # (X,) where in ``old`` each new row was, -1 if nowhere
    moved = (new >= 0) & (source >= 0)  # (X,)
    stays = torch.isin(old, new[moved])  # (X,) the old row is in ``after`` elsewhere
    return SlotChanges(arriving=changed[(new >= 0) & ~moved], moves_from=changed[source[moved]],
                       moves_to=changed[moved], leaving=changed[(old >= 0) & ~stays])


class HandedOut(NamedTuple):
    """The rows of one training step, between :meth:`LazySGDRows.rows_for_step` (or ``rows_in_slots``) and
    :meth:`LazySGDRows.step`.

    Attributes:
        local_indices (Tensor): ``(R,)`` row positions inside this rank's shard, on the host; -1 marks a slot
            without a row (``rows_in_slots``).
        weight (Tensor): ``(R, D)`` leaf tensor on the compute device that requires grad; after ``backward``
            its ``.grad`` is the loss gradient of these rows.
        momentum (Tensor): ``(R, D)`` SGD momentum of these rows, brought to the current step.
        kept (bool): The rows stay on the compute device after the step (``rows_in_slots``): the step updates
            them where they are and writes nothing back. Defaults to False.
    """

    local_indices: Tensor
    weight: Tensor
    momentum: Tensor
    kept: bool = False


class KeptRows(NamedTuple):
    """Rows kept on the compute device from one step to the next, slot by slot (``LazySGDRows.rows_in_slots``).

    Attributes:
        local_indices (Tensor): ``(R,)`` the row in each slot, on the host; -1 where a slot holds none.
        weight (Tensor): ``(R, D)`` the rows, current: they take every step.
        momentum (Tensor): ``(R, D)`` their SGD momentum.
    """

    local_indices: Tensor
    weight: Tensor
    momentum: Tensor


class LazySGDRows(RowStorage):
    """Rows with per-row SGD momentum, trained by PIC Eq. 2 when used and brought forward by Eq. 3 when not.

    Each step's learning rate ``eta``, momentum ``m`` and weight decay ``lambda`` come from :meth:`step`
    (``LazyCorrectedSGD`` calls it after the network's step, with its ``'instance_rows'`` param group). The
    rows a step uses come from :meth:`rows_for_step`, brought to the current step through the transitions of
    every step they missed, so each row ends exactly where dense ``torch.optim.SGD`` over the whole table, with
    zero gradients for unused rows, would have put it. The rows of one step must be distinct.

    Example (one training step in plain PyTorch; the docstring runs as a test)::

        >>> rows = LazySGDRows(num_rows=1000, dim=128)
        >>> used = torch.tensor([3, 14, 159])
        >>> weight = rows.rows_for_step(used, torch.device('cpu'))  # (3, 128), requires grad
        >>> weight.sum().backward()
        >>> rows.step(lr=0.03, momentum=0.9, weight_decay=1e-4)  # Eq. 2 on the 3 rows, A_0 for the others
        >>> rows.num_steps
        1

    The state dict holds the rows, their momentum and last-update step, and ``transitions``: the ``(T, 2, 2)``
    float64 ``A_j`` of every step so far, enough to resume exactly.

    Args:
        num_rows (int): Rows in the whole table (over all ranks).
        dim (int): Length of one row.
        init_std (float): Standard deviation of the rows' N(0, std^2) initialisation. Defaults to 0.01.
        placement (str): ``'device'`` or ``'host'`` (see :class:`RowStorage`). Defaults to 'device'.
        sharded (bool): Split the rows over the ranks (see :class:`RowStorage`). Defaults to False.
        dtype (torch.dtype): Type of the rows and their momentum. Defaults to torch.float32.
    """

    def __init__(self,
                 num_rows: int,
                 dim: int,
                 init_std: float = 0.01,
                 placement: str = 'device',
                 sharded: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        # last_step stays on the host, which decides from it what each step must bring forward
        super().__init__(num_rows, dim, init='normal', init_std=init_std, placement=placement, sharded=sharded,
                         dtype=dtype, columns=dict(momentum=((dim, ), dtype), last_step=((), torch.int64)),
                         host_columns=('last_step', ))
        self.transitions = TransitionProducts()
        self.handed_out: Optional[HandedOut] = None
        self.kept: Optional[KeptRows] = None

    @property
    def num_steps(self) -> int:
        """Steps made so far: the step ``t`` the next :meth:`step` performs."""
        return self.transitions.num_steps

    def rows_for_step(self, local_indices: Tensor, device: torch.device) -> Tensor:
        """Gather rows to ``device``, bring them to the current step, and hand them out until :meth:`step`.

        Args:
            local_indices (Tensor): ``(R,)`` distinct row positions in this rank's shard, on the host (where the
                rows' last steps are read: a GPU tensor would be read back).
            device (torch.device): Where the loss is computed.

        Returns:
            Tensor: ``(R, D)`` leaf weights that require grad; the loss must be built from them.

        Raises:
            RuntimeError: If the rows of the previous step were never stepped.
        """
        self._check_stepped()
        self.return_kept_rows()
        local_indices = local_indices.cpu()
        weight, momentum = self._gather_current(local_indices, device)
        weight.requires_grad_(True)
        self.handed_out = HandedOut(local_indices, weight, momentum)
        return weight

    def rows_in_slots(self, slots: Tensor, device: torch.device) -> Tensor:
        """Like :meth:`rows_for_step`, for rows in fixed slots that stay on ``device`` from one step to the next.

        With recent negatives (PIC Sec. 2.3) consecutive steps share all but about ``2 G`` of their ``K + G``
        rows (``G`` the global batch): the slots follow the recent-negative FIFO, so a row keeps its slot while it
        is recent. Between two steps a row that leaves the slots is written back to the table (it is current:
        kept rows take every step), one that arrives is gathered and brought forward by PIC Eq. 3, and one that
        changes slots (the last batch, entering the FIFO) moves on the device; the others stay where they are, and
        :meth:`step` updates them in place (Eq. 2). A step therefore moves about ``2 G`` rows between the table
        and ``device``, not ``2 (K + G)``. The table is whole again whenever it is read from outside a step
        (:meth:`columns`, ``rows.weight``, a checkpoint).

        Args:
            slots (Tensor): ``(R,)`` distinct row positions in this rank's shard, on the host; -1 for a slot
                without a row (its row is not used: the caller masks its logits).
            device (torch.device): Where the loss is computed.

        Returns:
            Tensor: ``(R, D)`` leaf weights that require grad, slot by slot; the loss must be built from them.
        """
        self._check_stepped()
        slots = slots.cpu()
        kept = self.kept
        if kept is None or kept.local_indices.shape != slots.shape or kept.weight.device != torch.device(device):
            self.return_kept_rows()
            empty = torch.zeros(len(slots), self.dim, dtype=self._columns['weight'].dtype, device=device)
            kept = KeptRows(torch.full_like(slots, -1), empty, empty.clone())
        changes = slot_changes(kept.local_indices, slots)
        # new rows first: their gather waits only for the write-backs of earlier steps
        arriving = self._gather_current(slots[changes.arriving], device)  # (A, D) each
        moving = self._slot_rows(kept, changes.moves_from)  # rows that change slots move on the device
        self._write_slots(kept.local_indices, *self._slot_rows(kept, changes.leaving), self.num_steps,
                          changes.leaving)
        for to, (weight, momentum) in ((changes.arriving, arriving), (changes.moves_to, moving)):
            if to.numel():
                on_device = to_device(to, device)
                kept.weight.index_copy_(0, on_device, weight)
                kept.momentum.index_copy_(0, on_device, momentum)
        self.kept = KeptRows(slots, kept.weight, kept.momentum)
        weight = kept.weight.detach().requires_grad_(True)  # a leaf on the kept rows' memory
        self.handed_out = HandedOut(slots, weight, kept.momentum, kept=True)
        return weight

    @staticmethod
    def _slot_rows(kept: KeptRows, slots: Tensor) -> Tuple[Tensor, Tensor]:
        """Copies of the kept rows and momentum in host ``slots``: ``(S,) -> (S, D), (S, D)``."""
        on_device = to_device(slots, kept.weight.device)
        return kept.weight.index_select(0, on_device), kept.momentum.index_select(0, on_device)

    def return_kept_rows(self) -> None:
        """Write the rows that :meth:`rows_in_slots` keeps on the device back into the table, and forget them.

        Rows handed out to a step that is still running are then written back by its :meth:`step`.
        """
        kept, self.kept = self.kept, None
        if kept is None:
            return
        self._write_slots(kept.local_indices, kept.weight, kept.momentum, self.num_steps)
        if self.handed_out is not None and self.handed_out.kept:
            self.handed_out = self.handed_out._replace(kept=False)

    def columns(self) -> Dict[str, Tensor]:
        """The whole table by column, with the rows kept on the device written back (see ``RowStorage``)."""
        self.return_kept_rows()
        return super().columns()

    def _check_stepped(self) -> None:
        if self.handed_out is not None:
            raise RuntimeError(
                'The instance rows used in the previous training step were never updated: in a runner, the '
                "config's optim_wrapper must train them (type='OptimWrapper' with "
                "constructor='LazyCorrectedSGDConstructor', or type='LazyCorrectedSGD'); in plain PyTorch, call "
                'rows.step(...) or LazyCorrectedSGD.update_params after each loss.')

    def _gather_current(self, local_indices: Tensor, device: torch.device) -> Tuple[Tensor, Tensor]:
        """Gather host-indexed rows and their momentum to ``device``, brought to the current step (Eq. 3)."""
        return self.bring_forward(self.gather(local_indices, device), self.gather(local_indices, device, 'momentum'),
                                  self._columns['last_step'].index_select(0, local_indices))

    def _write_slots(self, slots: Tensor, weight: Tensor, momentum: Tensor, last_step: int,
                     which: Optional[Tensor] = None) -> None:
        """Write rows into the table as of step ``last_step``.

        Either ``weight[j]`` is local row ``slots[j]`` (-1 for none) and every slot that holds a row is written,
        or ``which`` gives the host slots of the rows ``weight`` holds, in order.
        """
        if which is None:
            which = (slots >= 0).nonzero().squeeze(1)  # (W,)
            if which.numel() < slots.numel():
                on_device = to_device(which, weight.device)
                weight, momentum = weight.index_select(0, on_device), momentum.index_select(0, on_device)
        if which.numel() == 0:
            return
        local_indices = slots[which]
        self.write(local_indices, weight=weight, momentum=momentum,
                   last_step=torch.full_like(local_indices, last_step))

    def bring_forward(self, weight: Tensor, momentum: Tensor, last_step: Tensor) -> Tuple[Tensor, Tensor]:
        """Bring rows to the current step as if every step they skipped had updated them (PIC Eq. 3).

        A row with ``last_step = s`` holds its state after step ``s - 1``; at step ``t`` it becomes
        ``A_{t-1} ... A_s [w; u]``. The host picks the stale rows and multiplies their transitions (in float64);
        the device applies them in the rows' dtype, without reading anything back.

        Args:
            weight (Tensor): ``(R, D)`` rows, a gathered copy: updated in place.
            momentum (Tensor): ``(R, D)`` their SGD momentum, a gathered copy: updated in place.
            last_step (Tensor): ``(R,)`` step each row was last written for, on the host.

        Returns:
            tuple[Tensor, Tensor]: ``(R, D)`` weight and momentum at the current step.
        """
        # only rows that missed steps change: with recent negatives nearly all of a step's rows were updated by the
        # step before (the FIFO moves by one batch a step), so this is about B rows, not K + B
        stale = (last_step != self.num_steps).nonzero().squeeze(1)  # (S,) on the host
        if stale.numel() == 0:
            return weight, momentum
        # products in float64 (long runs), applied in the rows' dtype: a float32 row is no more exact than that
        per_row = to_device(self.transitions.products(last_step[stale], self.num_steps).to(weight.dtype),
                            weight.device)  # (S, 2, 2)
        stale = to_device(stale, weight.device)
        old_weight, old_momentum = weight[stale], momentum[stale]  # (S, D)
        new_weight = torch.addcmul(per_row[:, 0, 0, None] * old_weight, per_row[:, 0, 1, None], old_momentum)
        new_momentum = torch.addcmul(per_row[:, 1, 0, None] * old_weight, per_row[:, 1, 1, None], old_momentum)
        return weight.index_copy_(0, stale, new_weight), momentum.index_copy_(0, stale, new_momentum)

    def step(self, lr: float, momentum: float, weight_decay: float, correction: bool = True,
             skipped: bool = False) -> None:
        """PIC Eq. 2 on the rows handed out this step, then record this step's transition for all others.

        Args:
            lr (float): ``eta`` of this step.
            momentum (float): ``m`` of this step.
            weight_decay (float): ``lambda`` of this step.
            correction (bool): Record ``A_t`` for the rows that skip this step (PIC Eq. 3). False records the
                identity: PIC Table 2's "w/o correction" ablation, where skipped steps apply neither weight
                decay nor momentum. Defaults to True.
            skipped (bool): The network's step was skipped (a mixed-precision loss scaler found an inf / NaN
                gradient): no row moves, and the step is recorded as the identity for every row, as dense
                SGD without that step would be. Defaults to False.
        """
        handed_out, self.handed_out = self.handed_out, None
        if handed_out is not None and not skipped:
            self._update(handed_out, lr, momentum, weight_decay)
        if skipped or not correction:
            lr, momentum, weight_decay = 0.0, 1.0, 0.0  # A_t = [[1, 0], [0, 1]]
        self.transitions.append(lr, momentum, weight_decay)

    def _update(self, rows: HandedOut, lr: float, momentum: float, weight_decay: float) -> None:
        """One step of PIC Eq. 2 on the handed-out rows, with torch.optim.SGD's arithmetic."""
        # in place: the handed-out rows, their momentum and gradient are this step's own copies
        weight = rows.weight.detach()  # (R, D)
        grad = rows.weight.grad if rows.weight.grad is not None else torch.zeros_like(weight)
        if self.world_size == 1 and get_world_size() > 1:
            all_reduce(grad, op='mean')  # every rank holds and updates the same rows
        if momentum:  # u <- m * u + (g + lambda * w), w <- w - eta * u: one pass in torch's fused kernel
            sgd([weight], [grad], [rows.momentum], weight_decay=weight_decay, momentum=momentum, lr=lr,
                dampening=0., nesterov=False, maximize=False,
                fused=weight.device.type in _get_fused_kernels_supported_devices())  # not the meta device
        else:  # the kernel keeps no momentum for m = 0, but Eq. 2 defines it: u <- g + lambda * w
            rows.momentum.copy_(grad.add_(weight, alpha=weight_decay))
            weight.sub_(rows.momentum, alpha=lr)
        if not rows.kept:  # kept rows were updated where they stay
            self._write_slots(rows.local_indices, weight, rows.momentum, self.num_steps + 1)

    def assign(self, local_indices: Tensor, weight: Tensor) -> None:
        """Give rows new values with zero momentum, as of the current step (the contrastive prior)."""
        self.return_kept_rows()
        self.write(local_indices, weight=weight, momentum=torch.zeros_like(weight),
                   last_step=torch.full_like(local_indices, self.num_steps))

    def bring_all_forward(self, chunk_size: int = 65536) -> None:
        """Bring every row of this rank to the current step in place, ``chunk_size`` rows at a time.

        Call it between steps, before reading the rows themselves (the hard-class search, export, checkpoint
        converters); training does not need it.
        """
        self.return_kept_rows()
        device = self.device
        for first in range(0, self.num_local_rows, chunk_size):
            local_indices = torch.arange(first, min(first + chunk_size, self.num_local_rows))
            weight, momentum = self._gather_current(local_indices, device)
            self.write(local_indices, weight=weight, momentum=momentum,
                       last_step=torch.full_like(local_indices, self.num_steps))

    def state_keys(self) -> Tuple[str, ...]:
        return self.column_names + ('transitions', )

    def _save_to_state_dict(self, destination: Dict[str, Tensor], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + 'transitions'] = self.transitions.state_dict()['transitions']

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + 'transitions'
        if key not in state_dict:
            missing_keys.append(key)
            return
        transitions = state_dict[key]
        self.transitions.load_state_dict({'num_steps': len(transitions), 'transitions': transitions})
        newest = int(self.last_step.max()) if self.num_local_rows else 0
        if newest > self.num_steps:
            error_msgs.append(f'{prefix}last_step: rows were last updated at step {newest - 1}, but {key} holds '
                              f'only {self.num_steps} steps: the checkpoint is damaged.')
