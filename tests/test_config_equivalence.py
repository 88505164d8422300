"""The configs after their shared blocks moved to `_base_` pieces: every config still loads, the model index of each
method folder (metafile.yml, mmpretrain's format) lists exactly its configs, and the configs that now inherit the
same pieces share what they should."""
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

from conftest import REPO_ROOT

CONFIGS_DIR = REPO_ROOT / 'configs'
CONFIGS = sorted(p for p in CONFIGS_DIR.rglob('*.py') if '_base_' not in p.relative_to(CONFIGS_DIR).parts)
METHOD_DIRS = ['pic', 'full_classifier', 'npid']


def config_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS_DIR))


def metafile(method: str) -> dict:
    return yaml.safe_load((CONFIGS_DIR / method / 'metafile.yml').read_text())


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_every_config_loads(path):
    cfg = Config.fromfile(path)
    assert '_base_' not in cfg and cfg.get('model') is not None


@pytest.mark.parametrize('method', METHOD_DIRS)
def test_the_metafile_lists_every_config_of_its_folder_and_nothing_else(method):
    index = metafile(method)
    collections = {collection['Name'] for collection in index['Collections']}
    assert [collection['README'] for collection in index['Collections']] == [f'configs/{method}/README.md']
    assert (REPO_ROOT / 'configs' / method / 'README.md').is_file()
    listed = []
    for model in index['Models']:
        config = REPO_ROOT / model['Config']
        assert config.is_file(), model['Config']
        assert model['Name'] == config.stem and model['In Collection'] in collections
        assert model['Results'] is None and 'Weights' not in model  # no checkpoint has been trained
        assert {'Epochs', 'Batch Size', 'Training Data'} <= set(model['Metadata'])
        assert model['Metadata']['Epochs'] == Config.fromfile(config).train_cfg.max_epochs
        listed.append(config)
    on_disk = [p for p in CONFIGS if p.is_relative_to(CONFIGS_DIR / method)]
    assert sorted(listed) == on_disk  # each config once, none missing


@pytest.mark.parametrize('method', METHOD_DIRS)
def test_the_readme_table_links_every_config_of_the_metafile(method):
    readme = (CONFIGS_DIR / method / 'README.md').read_text()
    for model in metafile(method)['Models']:
        link = Path(model['Config']).relative_to(f'configs/{method}')
        assert f']({link})' in readme, link


def test_the_digits_and_imagenet_pic_configs_share_the_model_and_schedule_pieces():
    tiny = Config.fromfile(CONFIGS_DIR / 'pic' / 'pic_resnet18-w16_1xb128-coslr-20e_digits.py')
    full = Config.fromfile(CONFIGS_DIR / 'pic_r50.py')
    for cfg in (tiny, full):
        assert (cfg.model.type, cfg.model.neck.type, cfg.model.head.type) == (
            'InstanceClassification', 'NonLinearNeck', 'InstanceClsHead')
        assert cfg.optim_wrapper.constructor == 'LazyCorrectedSGDConstructor'
    # the same warm-up of epochs / 40 from lr / 100, then cosine to 0, at 20 and at 200 epochs
    for cfg, epochs in ((tiny, 20), (full, 200)):
        warmup, cosine = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 0.01, epochs / 40)
        assert (cosine.type, cosine.begin, cosine.end, cosine.T_max, cosine.eta_min) == (
            'CosineAnnealingLR', epochs / 40, epochs, epochs - epochs / 40, 0.)


def test_the_npid_configs_share_the_knn_evaluation_piece():
    knn = Config.fromfile(CONFIGS_DIR / '_base_' / 'datasets' / 'weighted_knn_bs256.py')
    for name in ('npid_r50.py', 'npid/npid_resnet18_1xb128-steplr-200e_cifar10.py',
                 'npid/npid_resnet18-w16_1xb128-coslr-20e_digits.py'):
        cfg = Config.fromfile(CONFIGS_DIR / name)
        for key in ('batch_size', 'persistent_workers', 'sampler', 'collate_fn'):
            assert cfg.val_dataloader[key] == knn.val_dataloader[key], (name, key)
        assert cfg.val_dataloader.dataset.type == 'KNNSplits' and {'train', 'test'} <= set(cfg.val_dataloader.dataset)
        assert (cfg.val_evaluator.type, cfg.val_evaluator.k, cfg.val_evaluator.tau) == ('WeightedKNN', 200, 0.07)
