"""tools/model_converters/extract_backbone.py on the checkpoint of a real tiny PIC run (ResNet_CIFAR-18 on digits).

The ResNet-50 path (the paper's backbone, loaded by every downstream config) is covered end to end by
tests/benchmarks/test_downstream_with_mim.py.
"""
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

from conftest import REPO_ROOT, TINY_CONFIG, run_cli
from model_converters.extract_backbone import export_backbone

TOOL = REPO_ROOT / 'tools' / 'model_converters' / 'extract_backbone.py'
SUBSET = 256
# torch.load with weights_only=True in a process that has not imported pic_plugin's allow-list
PLAIN_TORCH_LOAD = 'import sys, torch; torch.load(sys.argv[1], weights_only=True)'


@pytest.fixture(scope='module')
def pic_run_checkpoint(digits_workspace, tmp_path_factory):
    """epoch_1.pth of a one-epoch PIC run (2 iterations) through tools/train.py, with its state dict."""
    work_dir = tmp_path_factory.mktemp('pic_run')
    trained = run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', TINY_CONFIG, '--work-dir', work_dir,
                       '--no-validate', '--cfg-options', f'train_dataloader.dataset.indices={SUBSET}',
                       f'model.head.num_classes={SUBSET}', 'train_cfg.max_epochs=1',
                       'default_hooks.checkpoint.interval=1'], cwd=digits_workspace)
    assert trained.returncode == 0, trained.stderr[-3000:]
    path = work_dir / 'epoch_1.pth'
    import pic_plugin  # noqa: F401  (allow-lists the runner checkpoint's message hub under weights_only=True)
    return path, torch.load(path, weights_only=True)['state_dict']


def backbone_model():
    init_default_scope('mmpretrain')
    return MODELS.build(Config.fromfile(TINY_CONFIG).model.backbone)


def test_cli_exports_and_verifies_the_backbone_of_a_real_run(pic_run_checkpoint, tmp_path):
    path, state_dict = pic_run_checkpoint
    backbone_keys = [key for key in state_dict if key.startswith('backbone.')]
    out = tmp_path / 'backbone.pth'
    result = run_cli([sys.executable, TOOL, path, out], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    num_neck = sum(key.startswith('neck.') for key in state_dict)
    num_head = sum(key.startswith('head.') for key in state_dict)
    assert (f'kept {len(backbone_keys)} backbone tensors; dropped {len(state_dict) - len(backbone_keys)} '
            f'(head: {num_head}, neck: {num_neck})') in result.stdout
    assert f'verified: {len(backbone_keys)} tensors load into ResNet_CIFAR' in result.stdout  # config from meta

    refused = run_cli([sys.executable, '-c', PLAIN_TORCH_LOAD, path], cwd=tmp_path)  # the runner's message hub
    assert refused.returncode != 0 and 'Weights only load failed' in refused.stderr
    loaded = run_cli([sys.executable, '-c', PLAIN_TORCH_LOAD, out], cwd=tmp_path)  # tensors and strings only
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    exported = torch.load(out, weights_only=True)
    assert list(exported['state_dict']) == backbone_keys
    for key in backbone_keys:
        assert torch.equal(exported['state_dict'][key], state_dict[key]), key
    assert exported['meta']['key_prefix'] == 'backbone.'


def test_the_export_loads_with_prefix_init_cfg_and_as_load_from(pic_run_checkpoint, tmp_path):
    path, state_dict = pic_run_checkpoint
    out = tmp_path / 'backbone.pth'
    export_backbone(path, out)

    backbone = backbone_model()  # what a downstream config's init_cfg=dict(..., prefix='backbone.') does
    backbone.init_cfg = dict(type='Pretrained', checkpoint=str(out), prefix='backbone.')
    backbone.init_weights()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state_dict['backbone.' + key]), key

    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(TINY_CONFIG).model)  # load_from fills the whole model's backbone.*
    load_checkpoint(model, str(out), strict=False)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state_dict['backbone.' + key]), key


def test_strip_prefix_writes_a_plain_backbone_state_dict(pic_run_checkpoint, tmp_path):
    path, state_dict = pic_run_checkpoint
    out = tmp_path / 'plain.pth'
    export_backbone(path, out, strip_prefix=True)
    exported = torch.load(out, weights_only=True)['state_dict']
    backbone = backbone_model()
    backbone.load_state_dict(exported, strict=True)  # what init_cfg without prefix, or plain torch, does
    assert torch.equal(backbone.conv1.weight, state_dict['backbone.conv1.weight'])


def test_a_file_without_backbone_is_refused_with_its_name(tmp_path):
    path = tmp_path / 'only_neck.pth'
    torch.save(dict(state_dict=dict(neck_fc_weight=torch.ones(2))), path)
    result = run_cli([sys.executable, TOOL, path, tmp_path / 'out.pth'], cwd=tmp_path)
    assert result.returncode == 1
    assert f"{path} holds no backbone: none of its 1 state-dict keys starts with 'backbone.'" in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_an_export_that_does_not_fit_the_given_config_is_an_error(pic_run_checkpoint, tmp_path, capsys):
    path, _ = pic_run_checkpoint
    with pytest.raises(ValueError, match=r'the exported tensors do not (fit|match) ResNet'):
        export_backbone(path, tmp_path / 'out.pth', config_path=REPO_ROOT / 'configs' / 'pic_r50.py')
    assert not (tmp_path / 'out.pth').exists()


def test_a_bare_state_dict_is_exported_without_verification(pic_run_checkpoint, tmp_path, capsys):
    _, state_dict = pic_run_checkpoint
    bare = tmp_path / 'bare.pth'
    torch.save(state_dict, bare)
    export_backbone(bare, tmp_path / 'out.pth')
    assert f'not verified: {bare} stores no config in its meta; pass --config to verify' in capsys.readouterr().out
    export_backbone(bare, tmp_path / 'out.pth', config_path=TINY_CONFIG)
    assert 'verified:' in capsys.readouterr().out
