"""The configs in configs/benchmarks/ load the PIC backbone into every pre-trained module and keep their protocols.

Fast checks on the parsed configs and on the modules they build (no data, no training); the runs through `mim` are
in test_downstream_with_mim.py.
"""
from typing import Dict, List, Tuple

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS, init_default_scope

from conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / 'configs' / 'benchmarks'
CONFIGS = sorted(BENCHMARKS.rglob('*.py'))
INIT_FROM_EXPORT = dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.')
C4 = BENCHMARKS / 'mmdet' / 'faster-rcnn_r50-c4_ms-24k_voc0712.py'
MASK_RCNN = BENCHMARKS / 'mmdet' / 'mask-rcnn_r50-fpn_ms-1x_coco.py'
SEMI_1PCT = BENCHMARKS / 'semi' / 'resnet50_8xb32-ft-nesterov-coslr-60e_in1k-1pct.py'
SEMI_10PCT = BENCHMARKS / 'semi' / 'resnet50_8xb32-ft-nesterov-coslr-30e_in1k-10pct.py'
LINEAR = BENCHMARKS / 'linear' / 'resnet50_8xb32-linear-coslr-100e_in1k.py'


def config_id(path) -> str:
    return str(path.relative_to(BENCHMARKS))


@pytest.fixture(scope='module')
def pic_config() -> Config:
    return Config.fromfile(REPO_ROOT / 'configs' / 'pic_r50.py')


@pytest.fixture(scope='module')
def pic_backbone_shapes(pic_config) -> Dict[str, torch.Size]:
    """Names and shapes of the tensors of the ResNet-50 that configs/pic_r50.py pre-trains."""
    init_default_scope('mmpretrain')
    backbone = MODELS.build(pic_config.model.backbone)
    return {key: value.shape for key, value in backbone.state_dict().items()}


def pretrained_modules(cfg: Config) -> List[Tuple[str, ConfigDict]]:
    """The module configs of the model that start from a pre-trained checkpoint."""
    candidates = [('backbone', cfg.model.backbone), ('roi_head.shared_head', cfg.model.get('roi_head', {}).get(
        'shared_head'))]
    return [(name, module) for name, module in candidates if module is not None and 'init_cfg' in module]


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_every_pretrained_module_is_filled_entirely_by_the_pic_backbone(path, pic_backbone_shapes):
    cfg = Config.fromfile(path)
    modules = pretrained_modules(cfg)
    assert [name for name, _ in modules] == (['backbone', 'roi_head.shared_head'] if path == C4 else ['backbone'])
    assert cfg.model.get('pretrained') is None  # mmseg's model-level `pretrained` would override init_cfg
    init_default_scope(cfg.default_scope)
    for name, module_cfg in modules:
        assert module_cfg.init_cfg == INIT_FROM_EXPORT, name
        module = MODELS.build(module_cfg)
        for key, value in module.state_dict().items():  # no tensor is left to its random initialisation
            if path == C4 and key.startswith('norm.'):
                continue  # ...except MoCo's extra BatchNorm after res5, which starts as the identity
            assert key in pic_backbone_shapes, f'{name}.{key} has no pre-trained counterpart'
            assert value.shape == pic_backbone_shapes[key], f'{name}.{key}'


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_input_normalisation_is_the_pre_training_one(path, pic_config):
    cfg = Config.fromfile(path)
    preprocessor = cfg.model.get('data_preprocessor') or cfg.data_preprocessor
    pretraining = pic_config.model.data_preprocessor
    assert (preprocessor.mean, preprocessor.std) == (pretraining.mean, pretraining.std)
    assert preprocessor.get('to_rgb', preprocessor.get('bgr_to_rgb')) is pretraining.to_rgb is True


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_no_dataloader_passes_a_scope_to_its_collate_function(path):
    """A cross-package base adds `_scope_` to the dicts it defines; mmengine passes
    a collate_fn's keys to the function itself. None of the host bases used here defines collate_fn, so the
    runner's own `pseudo_collate` (no scope) is used."""
    cfg = Config.fromfile(path)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert '_scope_' not in (cfg[loader].get('collate_fn') or {}), loader


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_runner_checkpoints_load_under_weights_only(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports[0] == 'pic_plugin' and cfg.custom_imports.allow_failed_imports is False


def test_linear_probe_is_the_pic_release_recipe_on_a_frozen_backbone():
    cfg = Config.fromfile(LINEAR)
    assert cfg.model.backbone.frozen_stages == 4
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=30., momentum=0.9, weight_decay=0.)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 0.01, 5)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == ('CosineAnnealingLR', 5, 100, 1e-6)
    assert cfg.train_cfg.max_epochs == 100 and cfg.train_dataloader.batch_size * 8 == 256


def test_semi_supervised_configs_differ_only_in_label_file_and_length():
    one, ten = Config.fromfile(SEMI_1PCT), Config.fromfile(SEMI_10PCT)
    assert one.train_dataloader.dataset.ann_file == 'meta/train_1percent.txt'
    assert ten.train_dataloader.dataset.ann_file == 'meta/train_10percent.txt'
    assert (one.train_cfg.max_epochs, ten.train_cfg.max_epochs) == (60, 30)
    assert one.optim_wrapper.optimizer == dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.)
    assert one.model.backbone.norm_cfg.type == 'SyncBN' and one.model.backbone.get('frozen_stages', -1) == -1
    for cfg in (one, ten):
        del cfg.train_dataloader.dataset.ann_file, cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval
    assert one.to_dict() == ten.to_dict()


def test_voc_detection_follows_moco():
    cfg = Config.fromfile(C4)
    for module in (cfg.model.backbone, cfg.model.roi_head.shared_head):
        assert module.norm_cfg == dict(type='SyncBN', requires_grad=True)
        assert module.norm_eval is False and module.style == 'pytorch'
    assert cfg.model.backbone.frozen_stages == -1
    assert cfg.model.roi_head.bbox_head.num_classes == 20
    assert cfg.train_cfg.max_iters == 24000 and cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.param_scheduler[1].milestones == [18000, 22000]
    assert cfg.test_evaluator.iou_thrs == pytest.approx([0.5 + 0.05 * i for i in range(10)])
    assert cfg.test_evaluator.eval_mode == '11points'
    assert cfg.train_dataloader.dataset.ignore_keys == ['dataset_type']  # VOC2007 + VOC2012 concatenate
    # Base-RCNN-C4-BN.yaml: one more SyncBN after res5 (Res5ROIHeadsExtraNorm), precise BN after the last iteration
    assert cfg.model.roi_head.shared_head.type == 'ResLayerExtraNorm'
    init_default_scope('mmdet')
    head = MODELS.build(cfg.model.roi_head.shared_head)
    assert head.norm.num_features == 2048 and head.norm.weight.eq(1).all() and head.norm.bias.eq(0).all()
    assert cfg.custom_hooks == [dict(type='mmpretrain.BatchSamplerPreciseBNHook', num_samples=3200, interval=24000,
                                     priority='ABOVE_NORMAL')]


def test_coco_instance_segmentation_syncs_batchnorm_everywhere():
    cfg = Config.fromfile(MASK_RCNN)
    sync_bn = dict(type='SyncBN', requires_grad=True)
    model = cfg.model
    assert model.backbone.norm_cfg == model.neck.norm_cfg == sync_bn
    assert model.roi_head.bbox_head.norm_cfg == model.roi_head.mask_head.norm_cfg == sync_bn
    assert model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    assert model.backbone.frozen_stages == -1 and model.backbone.norm_eval is False
    assert cfg.train_cfg.max_epochs == 12
    assert [scale[1] for scale in cfg.train_pipeline[2].scales] == [640, 672, 704, 736, 768, 800]
