"""Export the backbone of a pic_plugin pre-training checkpoint for mmpretrain, mmdet and mmseg.

    python tools/model_converters/extract_backbone.py IN.pth OUT.pth [--strip-prefix] [--config CONFIG]

A pre-training checkpoint holds the backbone, the projection neck, the instance-classification head (its N x D
table and per-row optimiser state: 1.3 GB for ImageNet-1k), the optimiser and mmengine's message hub. OUT keeps
only the ``backbone.*`` tensors, as ``{'meta': ..., 'state_dict': ...}`` with plain tensors and strings, so it
loads under torch's ``weights_only=True`` in any tool, with nothing of pic_plugin imported.

Key names (OpenMMLab has two conventions; pick the one your downstream config expects):

* default, keys keep ``backbone.``: what the configs in ``configs/benchmarks/`` and mmpretrain's own benchmark
  configs load, with ``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')`` on the backbone;
  also loadable as ``load_from=OUT`` (it then fills only the downstream model's ``backbone``).
* ``--strip-prefix``: keys without ``backbone.`` (mmselfsup's ``extract_backbone_weights.py`` convention), for
  ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` without a prefix, or ``ResNet.load_state_dict``.

The export is verified: the backbone of the pre-training config (``--config``, else the config text that
mmengine stores in the checkpoint's ``meta``) is built and loaded with the exported tensors; a missing or
unexpected key, or a shape mismatch, is an error.
"""
import argparse
import os
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from pic_plugin.utils import allow_mmengine_checkpoints

BACKBONE_PREFIX = 'backbone.'


def load_checkpoint(path: Path) -> Tuple[Dict[str, Tensor], dict]:
    """The state dict and meta of a checkpoint, loaded with ``weights_only=True``.

    mmengine's message hub in a runner checkpoint holds ``HistoryBuffer`` objects and numpy arrays: they are
    allowed by pic_plugin's exact allow-list (never by ``weights_only=False``). The file is memory-mapped, so the
    instance table is not read into memory.

    Args:
        path (Path): An mmengine checkpoint (``{'meta', 'state_dict', ...}``) or a bare state dict.

    Returns:
        tuple[dict, dict]: The state dict and the meta (empty for a bare state dict).
    """
    allow_mmengine_checkpoints()
    checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict: pass the .pth '
                         'file that a pic_plugin pre-training run writes to its work dir (e.g. epoch_200.pth).')
    if 'state_dict' in checkpoint:
        return checkpoint['state_dict'], checkpoint.get('meta') or {}
    return checkpoint, {}


def split_backbone(state_dict: Dict[str, Tensor], path: Path,
                   strip_prefix: bool = False) -> Tuple[OrderedDict[str, Tensor], List[str]]:
    """Keep the ``backbone.*`` tensors of a state dict.

    Args:
        state_dict (dict[str, Tensor]): The full model's state dict.
        path (Path): Where it came from, for the error message.
        strip_prefix (bool): Write keys without ``backbone.``. Defaults to False.

    Returns:
        tuple[OrderedDict, list[str]]: The backbone tensors, and the keys that were dropped.

    Raises:
        ValueError: If no key starts with ``backbone.``.
    """
    kept = OrderedDict()
    dropped = []
    for key, value in state_dict.items():
        if key.startswith(BACKBONE_PREFIX):
            kept[key[len(BACKBONE_PREFIX):] if strip_prefix else key] = value
        else:
            dropped.append(key)
    if not kept:
        first_keys = ', '.join(list(state_dict)[:5]) or 'none'
        raise ValueError(f'{path} holds no backbone: none of its {len(state_dict)} state-dict keys starts with '
                         f"'{BACKBONE_PREFIX}' (first keys: {first_keys}). Pass a checkpoint of a whole "
                         'pre-training model, such as the epoch_N.pth a pic_plugin run writes to its work dir; '
                         'a file that is already backbone-only needs no export.')
    return kept, dropped


def backbone_config(meta: dict, config_path: Optional[Path]) -> Optional[dict]:
    """The pre-training backbone config: from ``--config``, else from the checkpoint's ``meta['cfg']``."""
    if config_path is not None:
        cfg = Config.fromfile(config_path)
    elif isinstance(meta.get('cfg'), str):
        cfg = Config.fromstring(meta['cfg'], file_format='.py')
    else:
        return None
    return cfg.model.backbone


def verify_backbone(backbone: OrderedDict[str, Tensor], backbone_cfg: dict,
                    strip_prefix: bool = False) -> nn.Module:
    """Build the backbone from its config and load the exported tensors into it.

    Args:
        backbone (OrderedDict[str, Tensor]): The exported tensors.
        backbone_cfg (dict): The pre-training config's ``model.backbone``.
        strip_prefix (bool): Whether the keys were written without ``backbone.``. Defaults to False.

    Returns:
        nn.Module: The backbone, holding the exported tensors.

    Raises:
        ValueError: Naming the missing and unexpected keys, or the shape mismatch.
    """
    init_default_scope('mmpretrain')
    model = MODELS.build(backbone_cfg)
    state = backbone if strip_prefix else OrderedDict(
        (key[len(BACKBONE_PREFIX):], value) for key, value in backbone.items())
    load_exactly(model, state, f'{backbone_cfg["type"]} built from the pre-training config',
                 'Pass the config the checkpoint was trained with as --config.')
    print(f'verified: {len(state)} tensors load into {backbone_cfg["type"]} with no missing or unexpected key')
    return model


def load_exactly(model: nn.Module, state: Dict[str, Tensor], model_name: str, fix: str) -> None:
    """Load ``state`` into ``model``: every key of the model, no other key, every shape as the model's.

    Args:
        model (nn.Module): The model to fill.
        state (dict[str, Tensor]): The exported tensors, under the model's key names.
        model_name (str): What the model is, for the error message.
        fix (str): What to do when they do not match, for the error message.

    Raises:
        ValueError: Naming the missing and unexpected keys, or the shape mismatch.
    """
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f'the exported tensors do not fit {model_name}: {error}\n{fix}') from error
    if missing or unexpected:
        raise ValueError(f'the exported tensors do not match {model_name}: missing keys {missing}, unexpected keys '
                         f'{unexpected}. {fix}')


def export_backbone(in_path: Path, out_path: Path, strip_prefix: bool = False,
                    config_path: Optional[Path] = None) -> OrderedDict[str, Tensor]:
    """Write the backbone of ``in_path`` to ``out_path`` and verify it (see the module docstring).

    Args:
        in_path (Path): Pre-training checkpoint.
        out_path (Path): Where to write the backbone-only checkpoint.
        strip_prefix (bool): Write keys without ``backbone.``. Defaults to False.
        config_path (Path, optional): Pre-training config for the verification. Defaults to None (the config
            text stored in the checkpoint's meta).

    Returns:
        OrderedDict[str, Tensor]: The exported tensors.
    """
    state_dict, meta = load_checkpoint(in_path)
    backbone, dropped = split_backbone(state_dict, in_path, strip_prefix)
    by_module = Counter(key.split('.', 1)[0] for key in dropped)
    print(f'kept {len(backbone)} backbone tensors; dropped {len(dropped)} '
          f'({", ".join(f"{name}: {count}" for name, count in sorted(by_module.items())) or "none"})')
    backbone_cfg = backbone_config(meta, config_path)
    if backbone_cfg is None:
        print(f'not verified: {in_path} stores no config in its meta; pass --config to verify')
    else:
        verify_backbone(backbone, backbone_cfg, strip_prefix)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(meta=dict(source=os.fspath(in_path), key_prefix='' if strip_prefix else BACKBONE_PREFIX),
                    state_dict=backbone), out_path)
    print(f'wrote {out_path}')
    return backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', type=Path, help='pre-training checkpoint (e.g. work_dirs/.../epoch_200.pth)')
    parser.add_argument('output', type=Path, help='backbone-only checkpoint to write')
    parser.add_argument('--strip-prefix', action='store_true',
                        help="write keys without 'backbone.' (for init_cfg without prefix)")
    parser.add_argument('--config', type=Path,
                        help="pre-training config to verify against (default: the config in the checkpoint's meta)")
    args = parser.parse_args()
    try:
        export_backbone(args.checkpoint, args.output, args.strip_prefix, args.config)
    except ValueError as error:
        parser.exit(1, f'error: {error}\n')


if __name__ == '__main__':
    main()
