"""Module state kept in plain host tensors, saved and loaded like buffers.

State that the host reads to plan a step (the recent-negative queue, NPID's step count) must not follow the
model to the GPU, or every step would wait for a value read back from it. Plain tensor attributes stay where
they are: ``model.to`` does not move them and DistributedDataParallel does not broadcast them, but
``nn.Module`` does not save them either. :class:`HostStateMixin` puts them into the state dict under their
attribute names, so checkpoints hold them as they held the buffers they replace.
"""
from typing import Dict, List, Tuple

from torch import Tensor


class HostStateMixin:
    """Save and load the host tensors named in ``host_state_names`` with the module's state dict.

    Mixed into an ``nn.Module`` before it in the bases; the module's parameters, buffers and children are saved
    and loaded as usual. A loaded tensor must have the saved shape; :meth:`host_state_hint` says which config key
    sets it.
    """

    host_state_names: Tuple[str, ...] = ()

    def host_state_hint(self, name: str) -> str:
        """The fix for a checkpoint whose ``name`` has another shape (e.g. the config key that sizes it)."""
        return 'the checkpoint was saved by a differently configured model.'

    def _save_to_state_dict(self, destination: Dict[str, Tensor], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self.host_state_names:
            destination[prefix + name] = getattr(self, name).detach()

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        own_keys = {prefix + name for name in self.host_state_names}
        num_unexpected = len(unexpected_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # nn.Module lists every key that is not a parameter or buffer as unexpected: ours are expected
        unexpected_keys[num_unexpected:] = [key for key in unexpected_keys[num_unexpected:] if key not in own_keys]
        for name in self.host_state_names:
            key, tensor = prefix + name, getattr(self, name)
            if key not in state_dict:
                missing_keys.append(key)
            elif state_dict[key].shape != tensor.shape:
                error_msgs.append(f'{key}: the checkpoint holds {tuple(state_dict[key].shape)} but this model has '
                                  f'{tuple(tensor.shape)}: {self.host_state_hint(name)}')
            else:
                tensor.copy_(state_dict[key])
