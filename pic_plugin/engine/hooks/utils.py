"""What the hooks of this package share: finding the model, its instance classifier, its device, a batch size."""
import itertools

import torch
from mmengine.model import is_model_wrapper
from torch import nn
from torch.utils.data import DataLoader


def unwrapped_model(runner) -> nn.Module:
    """The runner's model without its (Distributed)DataParallel wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def instance_head(model: nn.Module, hook_name: str) -> nn.Module:
    """The model's instance classifier: the head whose rows are ``LazySGDRows`` (``head.rows``).

    Raises:
        ValueError: If the model has no such head.
    """
    head = getattr(model, 'head', None)
    if head is None or not isinstance(getattr(head, 'rows', None), nn.Module):
        raise ValueError(f'{hook_name} works on an instance classifier, but the model\'s head is '
                         f'{type(head).__name__}, which keeps no trained rows: use it with '
                         "head=dict(type='InstanceClsHead', ...), or remove it from custom_hooks.")
    return head


def compute_device(model: nn.Module, head: nn.Module) -> torch.device:
    """Where the runner put the model: its first parameter's or buffer's device (the accelerator when there is
    one), else the rows' device, else (a head sized by ``num_classes='auto'`` before its rows exist) the CPU."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    if tensor is not None:
        return tensor.device
    rows = getattr(head, 'rows', getattr(head, 'bank', None))
    return rows.device if rows is not None else torch.device('cpu')


def loader_batch_size(loader: DataLoader) -> int:
    """Samples per batch of a loader, also when a batch sampler forms the batches (``batch_size`` is None then)."""
    return loader.batch_size or loader.batch_sampler.batch_size
