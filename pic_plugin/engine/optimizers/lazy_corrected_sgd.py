"""SGD for the rows of an instance classifier, with PIC's lazy correction of skipped steps (PIC Sec. 2.3).

PIC trains one classifier row ``w_i`` per training image with the same SGD as the network (PIC Eq. 2):

    u_i <- m * u_i + (g_i + lambda * w_i),        w_i <- w_i - eta * u_i.

A row whose image is not in the batch has ``g_i = 0`` but still moves, because of weight decay and momentum.
Updating every row every step costs memory and time linear in the data set, so PIC leaves such rows alone and
catches up when they are next gathered: with ``g_i = 0`` one step is linear in ``[w_i; u_i]`` (PIC Eq. 3),

    [w_i; u_i] <- A [w_i; u_i],        A = [[1 - eta * lambda, -eta * m], [lambda, m]],

and ``t'`` skipped steps are ``A^t'``. Eq. 3 assumes one learning rate for all of them; with a warm-up and a
cosine schedule every step ``j`` has its own ``A_j``, and a row last written before step ``s`` must be
multiplied by the ordered product ``A_{t-1} ... A_{s+1} A_s`` when it is gathered before step ``t``.
:class:`TransitionProducts` keeps every ``A_j`` and answers such products for any schedule, exactly and
without inverting anything. :class:`LazyCorrectedSGD` is the optimiser wrapper that applies them.
"""
from contextlib import contextmanager
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS
from torch import Tensor, nn
from torch.optim import Optimizer

if TYPE_CHECKING:
    from pic_plugin.models.utils.row_table import RowBatch, RowTable

ROWS_GROUP_NAME = 'instance_rows'
STATE_KEY = 'lazy_correction'


def _power_of_two_at_least(count: int) -> int:
    return 1 << max(0, count - 1).bit_length()


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
        self._grow(_power_of_two_at_least(initial_capacity))

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
        self._grow(max(self._capacity, _power_of_two_at_least(len(leaves))))
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
                self._grow(_power_of_two_at_least(self.num_steps))
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


@OPTIM_WRAPPERS.register_module()
class LazyCorrectedSGD(OptimWrapper):
    """An ``OptimWrapper`` that also trains instance rows by SGD with PIC's lazy correction (PIC Eq. 2-3).

    The wrapped optimizer (any type built from the config) updates the model's parameters as usual. The
    rows of every :class:`~pic_plugin.models.utils.row_table.RowTable` that gathered rows this step through
    ``rows_for_update`` get the SGD step of PIC Eq. 2 after it. Rows not gathered are not touched: when a
    head gathers them again, :meth:`bring_forward` multiplies them by the transitions of every step they
    missed (Eq. 3, generalised to one transition per step, see :class:`TransitionProducts`), so each row
    ends exactly where dense ``torch.optim.SGD`` over the whole table with zero gradients for unsampled rows
    would have put it.

    The rows' learning rate, momentum and weight decay live in an extra parameter-less param group named
    ``'instance_rows'`` that starts from the optimizer's defaults, so mmengine's param schedulers
    (warm-up, cosine, by iteration or epoch) drive it exactly like the backbone's groups. Gradient clipping
    (``clip_grad``) applies to the model's parameters only. The rows a table gathers in one step must be
    distinct (each is written back once).

    Example:
        >>> optim_wrapper = dict(
        ...     type='LazyCorrectedSGD', correction=True,
        ...     optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4))

    Args:
        optimizer (Optimizer): The optimizer of the model; its defaults must hold ``momentum`` and may not
            use Nesterov momentum, dampening or ``maximize``.
        correction (bool): Bring rows forward over the steps they skipped. False gives PIC Table 2's
            "w/o correction" ablation: skipped steps apply neither weight decay nor momentum.
            Defaults to True.
        accumulative_counts (int): Must be 1: the rows of a step are updated at that step's ``step()``.
            Defaults to 1.
        clip_grad (dict, optional): Gradient clipping of the model's parameters, as in ``OptimWrapper``.
            Defaults to None.
    """

    def __init__(self,
                 optimizer: Optimizer,
                 correction: bool = True,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        if accumulative_counts != 1:
            raise ValueError(f'LazyCorrectedSGD got accumulative_counts={accumulative_counts}, but the rows '
                             'gathered in a step are updated at that step: remove accumulative_counts from '
                             'optim_wrapper (or set it to 1) and raise the batch size instead.')
        self._check_defaults(optimizer)
        super().__init__(optimizer, accumulative_counts=accumulative_counts, clip_grad=clip_grad)
        defaults = optimizer.defaults
        optimizer.add_param_group({'params': [], 'lr': defaults['lr'], 'momentum': defaults['momentum'],
                                   'weight_decay': defaults.get('weight_decay', 0.0),
                                   'name': ROWS_GROUP_NAME})
        self.correction = correction
        self.transitions = TransitionProducts()
        self._tables: List['RowTable'] = []

    @staticmethod
    def _check_defaults(optimizer: Optimizer) -> None:
        defaults, name = optimizer.defaults, type(optimizer).__name__
        if 'momentum' not in defaults:
            raise ValueError(f'LazyCorrectedSGD trains the instance rows by SGD with momentum, but {name} has no '
                             f'momentum setting (its settings: {sorted(defaults)}): use optimizer='
                             "dict(type='SGD', lr=..., momentum=0.9, weight_decay=...).")
        unsupported = {'nesterov': False, 'dampening': 0, 'maximize': False}
        for key, supported in unsupported.items():
            if key in defaults and defaults[key] != supported:
                raise ValueError(f'LazyCorrectedSGD supports only {key}={supported} (PIC Eq. 2), got '
                                 f'{key}={defaults[key]} in {name}: remove {key} from the optimizer config.')

    @property
    def num_steps(self) -> int:
        """Optimiser steps done so far: the step ``t`` the next ``step()`` performs."""
        return self.transitions.num_steps

    @property
    def rows_group(self) -> dict:
        """The param group whose ``lr``, ``momentum`` and ``weight_decay`` the rows are trained with."""
        for group in self.optimizer.param_groups:
            if group.get('name') == ROWS_GROUP_NAME:
                return group
        raise RuntimeError(f'The optimizer lost its {ROWS_GROUP_NAME!r} param group: its state was replaced '
                           'by one saved from another optimiser wrapper; resume from a checkpoint saved by '
                           'LazyCorrectedSGD.')

    def attach(self, module: nn.Module) -> None:
        """Become the updater of every :class:`RowTable` in ``module`` (a table itself counts).

        ``optim_context`` does this before every training forward, so in a runner nothing needs to call it;
        plain PyTorch code calls it once with the model or the head.
        """
        from pic_plugin.models.utils.row_table import RowTable
        for table in module.modules():
            if isinstance(table, RowTable):
                table.updater = self
                if not any(known is table for known in self._tables):
                    self._tables.append(table)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """mmengine's ``BaseModel.train_step`` enters this before the forward: attach the model's tables."""
        self.attach(model)
        with super().optim_context(model):
            yield

    def bring_forward(self, weight: Tensor, momentum: Tensor, last_step: Tensor) -> Tuple[Tensor, Tensor]:
        """Bring rows to the current step as if every step they skipped had updated them (PIC Eq. 3).

        A row with ``last_step = s`` holds its state after step ``s - 1``; at step ``t`` it becomes
        ``A_{t-1} ... A_s [w; u]``. The products are computed in float64 and applied in the rows' dtype.
        With ``correction=False`` the rows are returned unchanged.

        Args:
            weight (Tensor): ``(R, D)`` rows.
            momentum (Tensor): ``(R, D)`` their SGD momentum.
            last_step (Tensor): ``(R,)`` step each row was last written for.

        Returns:
            tuple[Tensor, Tensor]: ``(R, D)`` weight and momentum at the current step.
        """
        if not self.correction or last_step.numel() == 0:
            return weight, momentum
        starts, row_to_start = torch.unique(last_step, return_inverse=True)  # (U,), (R,)
        newest = int(starts[-1])
        if newest > self.num_steps:
            raise ValueError(f'Rows were last updated at step {newest - 1}, but this optimiser has made only '
                             f'{self.num_steps} steps: the table was loaded from a checkpoint without its '
                             'optimiser state. Resume the run (resume=True) so that both are restored.')
        # products in float64 (long runs), applied in the rows' dtype: a float32 row is no more exact than that
        products = self.transitions.products(starts, self.num_steps).to(weight.device, weight.dtype)  # (U, 2, 2)
        per_row = products[row_to_start]  # (R, 2, 2)
        new_weight = torch.addcmul(per_row[:, 0, 0, None] * weight, per_row[:, 0, 1, None], momentum)  # (R, D)
        new_momentum = torch.addcmul(per_row[:, 1, 0, None] * weight, per_row[:, 1, 1, None], momentum)
        return new_weight, new_momentum

    def step(self, **kwargs) -> None:
        """Update the model, then this step's rows of every table (PIC Eq. 2), and record ``A_t``."""
        super().step(**kwargs)
        group = self.rows_group
        lr, momentum, weight_decay = float(group['lr']), group['momentum'], group['weight_decay']
        for table in self._tables:
            rows = table.pop_pending()
            if rows is not None:
                self._update_rows(table, rows, lr, momentum, weight_decay)
        self.transitions.append(lr, momentum, weight_decay)

    def _update_rows(self, table: 'RowTable', rows: 'RowBatch', lr: float, momentum: float,
                     weight_decay: float) -> None:
        """One step of PIC Eq. 2 on the gathered rows, with torch.optim.SGD's arithmetic."""
        weight = rows.weight.detach()  # (R, D)
        grad = rows.weight.grad if rows.weight.grad is not None else torch.zeros_like(weight)
        if table.world_size == 1 and get_world_size() > 1:
            all_reduce(grad, op='mean')  # every rank holds and updates the same rows
        step_direction = grad.add(weight, alpha=weight_decay)  # g + lambda * w
        new_momentum = rows.momentum.mul(momentum).add_(step_direction)  # m * u + (g + lambda * w)
        new_weight = weight.add(new_momentum, alpha=-lr)  # w - eta * u
        next_step = torch.full_like(rows.local_indices, self.num_steps + 1)
        table.write(rows.local_indices, weight=new_weight, momentum=new_momentum, last_step=next_step)

    def bring_table_forward(self, table: 'RowTable', chunk_size: int = 65536) -> None:
        """Bring every row of ``table`` to the current step in place, ``chunk_size`` rows at a time.

        Call it between steps, before reading the rows themselves (export, kNN on the classifier,
        checkpoint converters); training does not need it.

        Args:
            table (RowTable): A table with optimiser state (``with_optim_state=True``).
            chunk_size (int): Rows corrected at once. Defaults to 65536.
        """
        if table.momentum is None or table.last_step is None:
            raise ValueError('bring_table_forward needs a RowTable built with with_optim_state=True: a table '
                             'without momentum and last_step is not trained by LazyCorrectedSGD.')
        device = table.weight.device
        for first in range(0, table.num_local_rows, chunk_size):
            local_indices = torch.arange(first, min(first + chunk_size, table.num_local_rows), device=device)
            weight, momentum = self.bring_forward(table.gather(local_indices, device),
                                                  table.gather(local_indices, device, 'momentum'),
                                                  table.gather(local_indices, device, 'last_step'))
            table.write(local_indices, weight=weight, momentum=momentum,
                        last_step=torch.full_like(local_indices, self.num_steps))

    def state_dict(self) -> dict:
        """The optimizer's state dict plus the recorded transitions under ``'lazy_correction'``."""
        state = super().state_dict()
        state[STATE_KEY] = self.transitions.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the transitions, then the optimizer (``state_dict`` itself is not changed)."""
        if STATE_KEY not in state_dict:
            raise ValueError(f'The optimiser state has no {STATE_KEY!r} entry: it was not saved by '
                             'LazyCorrectedSGD. Resume from a checkpoint of a LazyCorrectedSGD run, or start '
                             'a new run (load_from=... without resume).')
        optimizer_state = dict(state_dict)
        self.transitions.load_state_dict(optimizer_state.pop(STATE_KEY))
        super().load_state_dict(optimizer_state)
