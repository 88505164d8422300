"""The full-classifier paper's semi-supervised configs: backbone lr 0.001, classifier lr 15 (1%) / 10 (10%).

Each config must change only the learning rates of the SimCLR-recipe config it inherits; the optimiser that mmengine
builds on the model must give those rates to the backbone's and the classifier's parameters.
"""
import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from conftest import REPO_ROOT

SEMI = REPO_ROOT / 'configs' / 'benchmarks' / 'semi'
# (config, the SimCLR-recipe config it inherits, the classifier's lr)
CASES = [
    ('resnet50_8xb32-ft-fullcls-lr15-coslr-60e_in1k-1pct.py', 'resnet50_8xb32-ft-nesterov-coslr-60e_in1k-1pct.py', 15.),
    ('resnet50_8xb32-ft-fullcls-lr10-coslr-30e_in1k-10pct.py', 'resnet50_8xb32-ft-nesterov-coslr-30e_in1k-10pct.py',
     10.),
]
BACKBONE_LR = 0.001


@pytest.mark.parametrize('name,base,classifier_lr', CASES, ids=[case[0] for case in CASES])
def test_only_the_learning_rates_differ_from_the_simclr_recipe(name, base, classifier_lr):
    cfg, base_cfg = Config.fromfile(SEMI / name), Config.fromfile(SEMI / base)
    assert cfg.optim_wrapper.optimizer.lr == classifier_lr
    for config in (cfg, base_cfg):
        del config.optim_wrapper.optimizer.lr
    del cfg.optim_wrapper.paramwise_cfg
    assert cfg.to_dict() == base_cfg.to_dict()


@pytest.mark.parametrize('name,base,classifier_lr', CASES, ids=[case[0] for case in CASES])
def test_backbone_and_classifier_get_the_papers_learning_rates(name, base, classifier_lr):
    cfg = Config.fromfile(SEMI / name)
    cfg.model.backbone.update(norm_cfg=dict(type='BN'), init_cfg=None)  # no process group, no checkpoint
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer

    lr_of = {id(param): group['lr'] for group in optimizer.param_groups for param in group['params']}
    names = [param_name for param_name, _ in model.named_parameters()]
    assert {param_name.split('.')[0] for param_name in names} == {'backbone', 'head'}
    for param_name, param in model.named_parameters():
        expected = BACKBONE_LR if param_name.startswith('backbone.') else classifier_lr
        assert lr_of[id(param)] == pytest.approx(expected, rel=1e-12), param_name
