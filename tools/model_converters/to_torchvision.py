"""Export the ResNet backbone of a pic_plugin pre-training checkpoint as a torchvision (and timm) state dict.

    python tools/model_converters/to_torchvision.py IN.pth OUT.pth [--config CONFIG]

mmpretrain's ``ResNet`` (depth 18, 34, 50, 101 or 152) names its modules as torchvision's ``resnet{depth}``
does: ``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.bn1``, ..., ``layer1.0.downsample.0`` / ``.1``; timm's
``resnet{depth}`` uses the same names. OUT holds the backbone's tensors under those names (without
``backbone.``) as a plain state dict, so it loads under torch's ``weights_only=True`` with nothing of pic_plugin
or mmpretrain installed, into either library's model.

``fc`` is not in OUT: pre-training learns no ImageNet classifier, and a freshly initialised one would pass for
a trained one. Replace ``fc`` before loading, or load with ``strict=False`` and check that ``fc`` is all that is
missing::

    model = torchvision.models.resnet50()
    model.fc = torch.nn.Identity()                      # the model outputs the pooled 2048-d features
    model.load_state_dict(torch.load('OUT.pth', weights_only=True))

    model = torchvision.models.resnet50(num_classes=10)  # fine-tuning: fc keeps its random initialisation
    missing, unexpected = model.load_state_dict(torch.load('OUT.pth', weights_only=True), strict=False)
    assert missing == ['fc.weight', 'fc.bias'] and not unexpected

    model = timm.create_model('resnet50', num_classes=0)  # timm: no fc
    model.load_state_dict(torch.load('OUT.pth', weights_only=True))

The export is verified: the backbone of the pre-training config (``--config``, else the config text that
mmengine stores in the checkpoint's ``meta``) is built with the checkpoint's tensors, torchvision's
``resnet{depth}`` (and timm's, where timm is installed) is loaded with OUT's, and the global-average-pooled
``layer4`` features of both, in eval mode, must agree on random images. A backbone that differs from
torchvision's (``style='caffe'``, another stem, width, stride, dilation or norm layer) fails there.
``ResNet_CIFAR`` (the digits configs' backbone) is refused: its 3x3 stride-1 stem without max-pool is not in
torchvision's or timm's ResNet; export it for mmpretrain with ``extract_backbone.py``.
"""
import argparse
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional

import torch
import torchvision
from torch import Tensor, nn

from extract_backbone import backbone_config, load_checkpoint, load_exactly, split_backbone, verify_backbone

try:
    import timm
except ImportError:
    timm = None

DEPTHS = (18, 34, 50, 101, 152)
# random images for the verification: the ImageNet stem and four stages leave 2 x 2 of a 64 x 64 image
VERIFY_INPUT_SHAPE = (2, 3, 64, 64)
TOLERANCE = 1e-5


def resnet_depth(backbone_cfg: dict) -> int:
    """The depth of the pre-training backbone, which must be an mmpretrain ``ResNet``.

    Raises:
        ValueError: If the backbone is ``ResNet_CIFAR``, another type, or of a depth torchvision does not build.
    """
    backbone_type = backbone_cfg['type'].split('.')[-1]  # 'mmpretrain.ResNet' -> 'ResNet'
    if backbone_type == 'ResNet_CIFAR':
        raise ValueError("the backbone is ResNet_CIFAR, whose stem (a 3x3 conv1 with stride 1 and no max-pool) "
                         "torchvision's and timm's ResNets do not have: export it for mmpretrain with "
                         "extract_backbone.py, or pre-train with backbone=dict(type='ResNet', ...) for torchvision.")
    if backbone_type != 'ResNet':
        raise ValueError(f"the backbone is {backbone_cfg['type']}: only mmpretrain's ResNet (the ImageNet stem) "
                         'converts to torchvision; export others for mmpretrain with extract_backbone.py.')
    depth = backbone_cfg.get('depth')
    if depth not in DEPTHS:
        raise ValueError(f'the backbone is a ResNet of depth {depth}: torchvision builds depths {DEPTHS}.')
    return depth


def target_models(depth: int) -> Dict[str, nn.Module]:
    """``resnet{depth}`` of torchvision (and of timm where it is installed) without ``fc``, by library name."""
    torchvision_model = getattr(torchvision.models, f'resnet{depth}')()
    torchvision_model.fc = nn.Identity()
    models = {'torchvision': torchvision_model}
    if timm is not None:
        models['timm'] = timm.create_model(f'resnet{depth}', num_classes=0)
    return models


@torch.no_grad()
def verify_features(backbone: nn.Module, model: nn.Module, model_name: str) -> None:
    """Compare the pooled ``layer4`` features of the mmpretrain backbone and the exported model, in eval mode.

    Raises:
        ValueError: If they differ by more than ``TOLERANCE``.
    """
    images = torch.randn(VERIFY_INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    backbone.eval()  # mmpretrain's ResNet.train returns None, not the module
    model.eval()
    expected = backbone(images)[-1].mean(dim=(2, 3))  # (B, C, h, w) -> (B, C)
    exported = model(images)  # (B, C): fc is an identity
    difference = float((expected - exported).abs().max())
    if not torch.allclose(expected, exported, rtol=TOLERANCE, atol=TOLERANCE):
        raise ValueError(f"{model_name}'s pooled features differ from the pre-trained backbone's by up to "
                         f'{difference:.3g}: the backbone is not built as torchvision builds a ResNet (it needs '
                         "style='pytorch', the default stem, widths, strides and dilations, and BatchNorm).")
    print(f'verified: {model_name} gives the pooled features of the pre-trained backbone (max difference '
          f'{difference:.2g} on random {"x".join(map(str, VERIFY_INPUT_SHAPE))} images)')


def export_torchvision(in_path: Path, out_path: Path, config_path: Optional[Path] = None) -> OrderedDict[str, Tensor]:
    """Write the ResNet backbone of ``in_path`` to ``out_path`` in torchvision's layout and verify it.

    See the module docstring.

    Args:
        in_path (Path): Pre-training checkpoint.
        out_path (Path): Where to write the state dict.
        config_path (Path, optional): Pre-training config. Defaults to None (the config text stored in the
            checkpoint's meta).

    Returns:
        OrderedDict[str, Tensor]: The exported tensors.

    Raises:
        ValueError: If the checkpoint stores no config and none is given, the backbone is not a ResNet that
            torchvision builds, or the verification fails.
    """
    state_dict, meta = load_checkpoint(in_path)
    backbone_cfg = backbone_config(meta, config_path)
    if backbone_cfg is None:
        raise ValueError(f'{in_path} stores no config in its meta: pass the pre-training config as --config (the '
                         "export needs the backbone's depth and checks the converted features).")
    depth = resnet_depth(backbone_cfg)
    exported, _ = split_backbone(state_dict, in_path, strip_prefix=True)
    backbone = verify_backbone(exported, dict(backbone_cfg, out_indices=(3, )), strip_prefix=True)
    for library, model in target_models(depth).items():
        model_name = f'{library} resnet{depth}'
        load_exactly(model, exported, model_name, 'Only a ResNet built as torchvision builds it converts.')
        verify_features(backbone, model, model_name)
    if timm is None:
        print(f"not verified with timm (not installed); its resnet{depth} has torchvision's key layout")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(exported, out_path)
    print(f'wrote {out_path}: {len(exported)} tensors, no fc; load it with '
          f"torchvision.models.resnet{depth}() after setting model.fc = torch.nn.Identity(), "
          f"or timm.create_model('resnet{depth}', num_classes=0)")
    return exported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', type=Path, help='pre-training checkpoint (e.g. work_dirs/.../epoch_200.pth)')
    parser.add_argument('output', type=Path, help='torchvision / timm state dict to write')
    parser.add_argument('--config', type=Path,
                        help="pre-training config (default: the config in the checkpoint's meta)")
    args = parser.parse_args()
    try:
        export_torchvision(args.checkpoint, args.output, args.config)
    except ValueError as error:
        parser.exit(1, f'error: {error}\n')


if __name__ == '__main__':
    main()
