"""pic_plugin: self-supervised pre-training by instance classification (PIC, full classifier, NPID) for mmpretrain.

``import pic_plugin`` (what ``custom_imports=dict(imports=['pic_plugin'])`` does) registers every component into
mmpretrain's registries, so configs alone select the method.
"""
from typing import Set

from mmpretrain import registry

from . import visualization  # noqa: F401  (the feature pictures of FeaturePicturesHook)
from . import datasets, engine, evaluation, models  # noqa: F401  (registers the components)
from .utils import allow_mmengine_checkpoints, check_custom_imports

__version__ = '0.1.0'

# `--resume` under torch's weights_only=True default, without ever loading with weights_only=False
allow_mmengine_checkpoints()

_REGISTRIES = (registry.MODELS, registry.DATA_SAMPLERS, registry.DATASETS, registry.OPTIM_WRAPPERS,
               registry.OPTIM_WRAPPER_CONSTRUCTORS, registry.HOOKS, registry.METRICS, registry.TRANSFORMS,
               registry.LOOPS)


def registered_names() -> Set[str]:
    """Names of the registry entries that this package adds to mmpretrain."""
    return {name for reg in _REGISTRIES for name, cls in reg.module_dict.items()
            if cls.__module__.startswith(__name__ + '.')}


__all__ = ['check_custom_imports', 'registered_names', '__version__']
