"""tools/model_converters/to_torchvision.py: an mmpretrain ResNet becomes torchvision's / timm's, same features.

The checkpoints are made here as a pre-training run saves them (``backbone.*``, ``neck.*``, ``head.*`` tensors,
the config text in ``meta``, mmengine's message hub), with random weights and BatchNorm statistics away from
their defaults, so that the comparison of pooled features covers every tensor.
"""
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import REPO_ROOT, run_cli

CONVERTERS = REPO_ROOT / 'tools' / 'model_converters'
sys.path.insert(0, str(CONVERTERS))
from to_torchvision import export_torchvision, main  # noqa: E402

IMAGE_SHAPE = (3, 3, 96, 96)
# a fresh interpreter: nothing of pic_plugin, mmpretrain or mmengine is imported to load the export
PLAIN_LOAD = """
import sys, torch, torchvision
model = torchvision.models.resnet18()
model.fc = torch.nn.Identity()
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
images = torch.randn({shape}, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    torch.save(model.eval()(images), sys.argv[2])
assert not [name for name in sys.modules if name.split('.')[0] in ('pic_plugin', 'mmpretrain', 'mmengine')]
""".format(shape=IMAGE_SHAPE)


def random_images() -> torch.Tensor:
    return torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(1))


def trained_looking_backbone(backbone_cfg: dict) -> nn.Module:
    """The backbone with random weights, and BatchNorm scales, shifts and running statistics off their defaults."""
    init_default_scope('mmpretrain')
    backbone = MODELS.build(backbone_cfg)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d):  # activations keep their scale through the stages (no slow subnormals)
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu', generator=generator)
            if isinstance(module, _BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.num_batches_tracked.fill_(1234)
    return backbone


def pretraining_checkpoint(path: Path, backbone_cfg: dict, backbone: nn.Module, with_config: bool = True) -> Path:
    """Save ``backbone`` as the backbone of a pre-training checkpoint."""
    state_dict = OrderedDict(('backbone.' + key, value) for key, value in backbone.state_dict().items())
    state_dict['neck.mlp.0.weight'] = torch.randn(8, 4)
    state_dict['head.rows.weight'] = torch.randn(16, 8)
    cfg = Config(dict(model=dict(type='InstanceClassification', backbone=backbone_cfg)))
    torch.save(dict(meta=dict(cfg=cfg.pretty_text) if with_config else dict(), state_dict=state_dict,
                    message_hub=dict(log_scalars={'train/loss': HistoryBuffer([1.0], [1])})), path)
    return path


def write_config(folder: Path, depth: int) -> Path:
    """A pre-training config file with a ResNet backbone of this depth."""
    path = folder / 'pretrain.py'
    Config(dict(model=dict(type='InstanceClassification', backbone=dict(type='ResNet', depth=depth)))).dump(path)
    return path


@torch.no_grad()
def pooled_features(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled output of mmpretrain's last stage (layer4), in eval mode."""
    backbone.eval()  # mmpretrain's ResNet.train returns None, not the module
    return backbone(images)[-1].mean(dim=(2, 3))  # (B, C, h, w) -> (B, C)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``depth -> (mmpretrain backbone, exported state dict path)``, each depth converted once."""
    cache = {}

    def export(depth: int):
        if depth not in cache:
            folder = tmp_path_factory.mktemp(f'resnet{depth}')
            backbone_cfg = dict(type='ResNet', depth=depth)
            backbone = trained_looking_backbone(backbone_cfg)
            checkpoint = pretraining_checkpoint(folder / 'epoch_200.pth', backbone_cfg, backbone)
            export_torchvision(checkpoint, folder / f'resnet{depth}_torchvision.pth')
            cache[depth] = backbone, folder / f'resnet{depth}_torchvision.pth'
        return cache[depth]

    return export


@pytest.mark.parametrize('depth', [18, 50])
def test_torchvision_resnet_gets_the_pooled_features_of_the_backbone(exported, depth):
    backbone, path = exported(depth)
    state = torch.load(path, weights_only=True)
    assert state.keys() == backbone.state_dict().keys()  # the same names, without backbone. and without fc
    assert float(state['bn1.running_var'].sub(1).abs().max()) > 0.1  # the statistics travelled
    model = getattr(torchvision.models, f'resnet{depth}')()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ['fc.weight', 'fc.bias'] and unexpected == []
    model.fc = nn.Identity()
    with torch.no_grad():
        features = model.eval()(random_images())  # (B, 512 or 2048)
    expected = pooled_features(backbone, random_images())
    assert features.shape == (IMAGE_SHAPE[0], 512 if depth == 18 else 2048)
    assert float(expected.std()) > 0.01
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('depth', [18, 50])
def test_timm_resnet_gets_the_pooled_features_of_the_backbone(exported, depth):
    timm = pytest.importorskip('timm')
    backbone, path = exported(depth)
    model = timm.create_model(f'resnet{depth}', num_classes=0)  # no fc: the model outputs pooled features
    model.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        features = model.eval()(random_images())
    torch.testing.assert_close(features, pooled_features(backbone, random_images()), rtol=1e-5, atol=1e-5)


def test_the_export_loads_without_pic_plugin_and_the_cli_verifies_it(exported, tmp_path):
    backbone, _ = exported(18)
    backbone_cfg = dict(type='ResNet', depth=18)
    checkpoint = pretraining_checkpoint(tmp_path / 'epoch_1.pth', backbone_cfg, backbone)
    out = tmp_path / 'exported' / 'resnet18.pth'
    result = run_cli([sys.executable, CONVERTERS / 'to_torchvision.py', checkpoint, out], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'verified: 120 tensors load into ResNet with no missing or unexpected key' in result.stdout
    assert 'verified: torchvision resnet18 gives the pooled features of the pre-trained backbone' in result.stdout
    assert f'wrote {out}: 120 tensors, no fc' in result.stdout

    features = tmp_path / 'features.pth'
    loaded = run_cli([sys.executable, '-c', PLAIN_LOAD, out, features], cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    torch.testing.assert_close(torch.load(features, weights_only=True), pooled_features(backbone, random_images()),
                               rtol=1e-5, atol=1e-5)


def test_resnet_cifar_is_refused_with_what_to_use_instead(tmp_path, monkeypatch, capsys):
    backbone_cfg = dict(type='ResNet_CIFAR', depth=18)
    checkpoint = pretraining_checkpoint(tmp_path / 'digits.pth', backbone_cfg, trained_looking_backbone(backbone_cfg))
    monkeypatch.setattr(sys, 'argv', ['to_torchvision.py', str(checkpoint), str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert ('error: the backbone is ResNet_CIFAR, whose stem (a 3x3 conv1 with stride 1 and no max-pool) '
            "torchvision's and timm's ResNets do not have: export it for mmpretrain with extract_backbone.py"
            ) in capsys.readouterr().err
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('changes, error', [
    (dict(strides=(1, 2, 2, 1)), r"torchvision resnet18's pooled features differ from the pre-trained backbone's"),
    (dict(norm_cfg=dict(type='GN', num_groups=8)),
     r"do not match torchvision resnet18: missing keys \['bn1.weight', .*unexpected keys \['gn1.weight'"),
    (dict(type='ResNetV1d'), r"the backbone is ResNetV1d: only mmpretrain's ResNet .* converts to torchvision"),
])
def test_a_resnet_that_torchvision_does_not_build_is_refused(tmp_path, changes, error):
    backbone_cfg = dict(dict(type='ResNet', depth=18), **changes)
    checkpoint = pretraining_checkpoint(tmp_path / 'other.pth', backbone_cfg, trained_looking_backbone(backbone_cfg))
    with pytest.raises(ValueError, match=error):
        export_torchvision(checkpoint, tmp_path / 'out.pth')
    assert not (tmp_path / 'out.pth').exists()


def test_a_checkpoint_without_config_asks_for_one(exported, tmp_path):
    backbone, _ = exported(18)
    checkpoint = pretraining_checkpoint(tmp_path / 'bare.pth', dict(type='ResNet', depth=18), backbone,
                                        with_config=False)
    with pytest.raises(ValueError, match=r'bare.pth stores no config in its meta: pass the pre-training config as '
                                         r'--config'):
        export_torchvision(checkpoint, tmp_path / 'out.pth')
    export_torchvision(checkpoint, tmp_path / 'out.pth', config_path=write_config(tmp_path, depth=18))
    assert (tmp_path / 'out.pth').exists()
