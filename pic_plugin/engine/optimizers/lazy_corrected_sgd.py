"""Optimiser wrappers that train the instance rows by SGD with PIC's lazy correction (PIC Sec. 2.3, Eq. 2-3).

The network's parameters are updated by the wrapped optimizer as usual. After that step, each wrapper hands the
step's learning rate, momentum and weight decay to every :class:`~pic_plugin.models.utils.LazySGDRows` of the
model (``rows.step``): the rows used in the step get PIC Eq. 2, the others have the step's transition recorded
(Eq. 3). Dependencies run one way: the wrapper knows the rows; the rows know no optimiser.

* :class:`LazyCorrectedSGD`: mmengine's ``OptimWrapper``; ``dtype='bfloat16'`` runs the forward under
  mmengine's autocast (bfloat16 needs no loss scaling, and runs on the CPU too).
* :class:`AmpLazyCorrectedSGD`: mmengine's ``AmpOptimWrapper`` (autocast and its ``GradScaler``, float16 by
  default; a GPU). The scaler unscales and checks the rows' gradients with the network's; a step it skips
  (inf / NaN) moves no row and is recorded as the identity, so the lazily corrected rows still equal dense SGD
  with the same steps skipped.
* :class:`LazyCorrectedSGDConstructor`: builds the one of the two that a config's ``type`` asks for, so that
  ``--amp`` of ``mim train mmpretrain`` / ``mmselfsup`` and of ``tools/train.py`` (which set
  ``type='AmpOptimWrapper'``) keep the row update.
"""
from contextlib import contextmanager
from typing import List, Optional, Union

import torch
from mmengine.dist import all_reduce
from mmengine.optim import AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.runner.amp import autocast
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS
from torch import nn
from torch.optim import Optimizer

from pic_plugin.models.utils.lazy_sgd_rows import LazySGDRows

ROWS_GROUP_NAME = 'instance_rows'
# the optimiser state key under which checkpoints of pic_plugin 0.1 (before 2026-12-01) kept the transitions
OLD_STATE_KEY = 'lazy_correction'
WRAPPER_OF_TYPE = {'OptimWrapper': 'LazyCorrectedSGD', 'AmpOptimWrapper': 'AmpLazyCorrectedSGD'}


class _TrainsInstanceRows:
    """What both wrappers add to mmengine's: the rows' param group, finding the rows, stepping them."""

    trains_instance_rows = True
    optimizer: Optimizer

    def _setup_rows(self, correction: bool) -> None:
        defaults = self.optimizer.defaults
        self.optimizer.add_param_group({'params': [], 'lr': defaults['lr'], 'momentum': defaults['momentum'],
                                        'weight_decay': defaults.get('weight_decay', 0.0),
                                        'name': ROWS_GROUP_NAME})
        self.correction = correction
        self.row_sets: List[LazySGDRows] = []
        self._model_searched = False

    @staticmethod
    def _check(optimizer: Optimizer, accumulative_counts: int) -> None:
        if accumulative_counts != 1:
            raise ValueError(f'the optim_wrapper got accumulative_counts={accumulative_counts}, but the instance '
                             'rows used in a step are updated at that step: remove accumulative_counts from '
                             'optim_wrapper (or set it to 1) and raise the batch size instead.')
        defaults, name = optimizer.defaults, type(optimizer).__name__
        if 'momentum' not in defaults:
            raise ValueError(f'the instance rows are trained by SGD with momentum, but {name} has no momentum '
                             f'setting (its settings: {sorted(defaults)}): use optimizer='
                             "dict(type='SGD', lr=..., momentum=0.9, weight_decay=...).")
        unsupported = {'nesterov': False, 'dampening': 0, 'maximize': False}
        for key, supported in unsupported.items():
            if key in defaults and defaults[key] != supported:
                raise ValueError(f'the instance rows support only {key}={supported} (PIC Eq. 2), got '
                                 f'{key}={defaults[key]} in {name}: remove {key} from the optimizer config.')

    @property
    def rows_group(self) -> dict:
        """The param group whose ``lr``, ``momentum`` and ``weight_decay`` the rows are trained with."""
        for group in self.optimizer.param_groups:
            if group.get('name') == ROWS_GROUP_NAME:
                return group
        raise RuntimeError(f'The optimizer lost its {ROWS_GROUP_NAME!r} param group: its state was replaced '
                           'by one saved from another optimiser wrapper; resume from a checkpoint saved by '
                           'LazyCorrectedSGD.')

    def register_rows(self, module: nn.Module) -> None:
        """Train every :class:`LazySGDRows` in ``module`` from now on (a row set itself counts).

        In a runner the wrapper does this with the model at the first ``optim_context``; plain PyTorch code
        calls it once with the model or the head.
        """
        for rows in module.modules():
            if isinstance(rows, LazySGDRows) and not any(known is rows for known in self.row_sets):
                self.row_sets.append(rows)

    def _find_rows(self, model: nn.Module) -> None:
        if not self._model_searched:
            self.register_rows(model)
            self._model_searched = True

    def _step_rows(self, skipped: bool) -> None:
        group = self.rows_group
        for rows in self.row_sets:
            rows.step(float(group['lr']), group['momentum'], group['weight_decay'], correction=self.correction,
                      skipped=skipped)

    def load_state_dict(self, state_dict: dict) -> None:
        if OLD_STATE_KEY in state_dict:
            raise ValueError(f'The optimiser state holds {OLD_STATE_KEY!r}: the checkpoint was saved by '
                             'pic_plugin before the transitions moved into the model. Convert it once with '
                             'python tools/model_converters/upgrade_checkpoint.py OLD.pth NEW.pth, then resume '
                             'from NEW.pth.')
        super().load_state_dict(state_dict)


@OPTIM_WRAPPERS.register_module()
class LazyCorrectedSGD(_TrainsInstanceRows, OptimWrapper):
    """``OptimWrapper`` that also trains the model's instance rows (PIC Eq. 2-3), optionally under bf16 autocast.

    The rows' learning rate, momentum and weight decay live in an extra parameter-less param group named
    ``'instance_rows'`` that starts from the optimizer's defaults, so mmengine's param schedulers (warm-up,
    cosine, by iteration or epoch) drive it exactly like the backbone's groups. Gradient clipping
    (``clip_grad``) applies to the model's parameters only.

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper', constructor='LazyCorrectedSGDConstructor', correction=True,
        ...     optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4))

    Args:
        optimizer (Optimizer): The optimizer of the model; its defaults must hold ``momentum`` and may not
            use Nesterov momentum, dampening or ``maximize``.
        correction (bool): Bring rows forward over the steps they skipped. False gives PIC Table 2's
            "w/o correction" ablation: skipped steps apply neither weight decay nor momentum.
            Defaults to True.
        dtype (str, optional): ``'bfloat16'`` runs each training forward under mmengine's autocast in
            bfloat16 (on the CPU or a GPU); the rows, their momentum and the transitions stay float32. For
            float16, which needs loss scaling, use :class:`AmpLazyCorrectedSGD`. Defaults to None (float32).
        accumulative_counts (int): Must be 1: the rows of a step are updated at that step's ``step()``.
            Defaults to 1.
        clip_grad (dict, optional): Gradient clipping of the model's parameters, as in ``OptimWrapper``.
            Defaults to None.
    """

    def __init__(self,
                 optimizer: Optimizer,
                 correction: bool = True,
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        self._check(optimizer, accumulative_counts)
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f"optim_wrapper.dtype={dtype!r}: LazyCorrectedSGD autocasts to 'bfloat16' only "
                             "(float16 needs loss scaling): set type='AmpOptimWrapper' (or pass --amp) for float16 "
                             "on a GPU, or dtype='bfloat16'.")
        super().__init__(optimizer, accumulative_counts=accumulative_counts, clip_grad=clip_grad)
        self.cast_dtype = None if dtype is None else torch.bfloat16
        self._setup_rows(correction)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """mmengine's ``BaseModel.train_step`` enters this around the forward: find the rows, autocast."""
        self._find_rows(model)
        with super().optim_context(model), autocast(dtype=self.cast_dtype, enabled=self.cast_dtype is not None):
            yield

    @torch.compiler.disable  # eager under torch.compile: a traced SGD step recompiles whenever the lr changes
    def step(self, **kwargs) -> None:
        """Update the model, then the rows (PIC Eq. 2 for those used, the transition for the others)."""
        super().step(**kwargs)
        self._step_rows(skipped=False)


@OPTIM_WRAPPERS.register_module()
class AmpLazyCorrectedSGD(_TrainsInstanceRows, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` (autocast and loss scaling) that also trains the instance rows.

    Before the scaler's step, the rows' leaf tensors of this step join the ``'instance_rows'`` group for the
    scaler's ``unscale_``: their gradients are unscaled and checked for inf / NaN together with the network's,
    then leave the group again (the rows are updated by ``rows.step``, not by the optimizer). The inf check is
    reduced over the ranks (a rank's row gradients are its own until the row update), so all ranks skip together.
    When the scaler skips the step, ``rows.step(skipped=True)`` moves no row and records the identity.

    Args:
        optimizer (Optimizer): As for :class:`LazyCorrectedSGD`.
        correction (bool): As for :class:`LazyCorrectedSGD`. Defaults to True.
        loss_scale (str | float | dict): mmengine's ``AmpOptimWrapper`` loss scale. Defaults to 'dynamic'.
        dtype (str, optional): Autocast type, ``'float16'`` or ``'bfloat16'``. Defaults to None (float16).
        accumulative_counts (int): Must be 1. Defaults to 1.
        clip_grad (dict, optional): Gradient clipping of the model's parameters. Defaults to None.
    """

    def __init__(self,
                 optimizer: Optimizer,
                 correction: bool = True,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        self._check(optimizer, accumulative_counts)
        if not torch.cuda.is_available():
            raise RuntimeError("mixed precision with loss scaling (optim_wrapper type='AmpOptimWrapper', or --amp) "
                               "uses mmengine's AmpOptimWrapper, which needs a GPU. On the CPU, train in bfloat16 "
                               "instead: drop --amp and pass --cfg-options optim_wrapper.dtype=bfloat16.")
        super().__init__(loss_scale=loss_scale, dtype=dtype, optimizer=optimizer,
                         accumulative_counts=accumulative_counts, clip_grad=clip_grad)
        self._setup_rows(correction)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Find the rows, then mmengine's AMP context (autocast)."""
        self._find_rows(model)
        with super().optim_context(model):
            yield

    @torch.compiler.disable  # eager under torch.compile, as LazyCorrectedSGD.step
    def step(self, **kwargs) -> None:
        """Unscale and check the network's and the rows' gradients, step the network unless the scaler skips,
        then step the rows (skipped with it)."""
        group = self.rows_group
        group['params'] = [rows.handed_out.weight for rows in self.row_sets if rows.handed_out is not None]
        try:
            self.loss_scaler.unscale_(self.optimizer)
        finally:
            group['params'] = []
        found_inf = self.loss_scaler._found_inf_per_device(self.optimizer)  # filled by unscale_ until update
        # the rows' gradients differ between ranks (DDP reduces only the network's): every rank skips when one does,
        # and scales the loss alike (mmengine's all_reduce is the identity without a process group)
        for value in found_inf.values():
            all_reduce(value, op='max')
        skipped = bool(sum(float(value) for value in found_inf.values()))
        if self.clip_grad_kwargs:
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
        self._step_rows(skipped=skipped)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LazyCorrectedSGDConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, building :class:`LazyCorrectedSGD` for ``type='OptimWrapper'`` and
    :class:`AmpLazyCorrectedSGD` for ``type='AmpOptimWrapper'`` (what ``--amp`` sets); other types as given.

    Example::

        optim_wrapper = dict(type='OptimWrapper', constructor='LazyCorrectedSGDConstructor',
                             optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4))
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        wrapper_type = optim_wrapper_cfg.get('type', 'OptimWrapper')
        optim_wrapper_cfg['type'] = WRAPPER_OF_TYPE.get(wrapper_type, wrapper_type)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
