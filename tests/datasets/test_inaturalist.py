"""INaturalist2018 reads the official iNat 2018 JSON files, and the inat18 benchmark config trains on what it reads.

The data set is a tiny iNat-style tree written by the tests: 3 categories, small JPEGs under
``train_val2018/<supercategory>/<category id>/``, ``train2018.json`` and ``val2018.json``.
"""
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS
from PIL import Image

import pic_plugin  # noqa: F401  (registers INaturalist2018)
from conftest import REPO_ROOT
from pic_plugin.datasets import INaturalist2018

INAT_CONFIG = REPO_ROOT / 'configs' / 'benchmarks' / 'inat18' / 'resnet50_8xb32-ft-coslr-100e_inat18.py'
# (id, name, supercategory), listed out of id order as nothing in the format promises an order
CATEGORIES = [(2, 'Aves sp. 2', 'Aves'), (0, 'Plantae sp. 0', 'Plantae'), (1, 'Fungi sp. 1', 'Fungi')]
CLASSES = ('Plantae sp. 0', 'Fungi sp. 1', 'Aves sp. 2')
TRAIN_LABELS = [0, 1, 2, 0, 1, 2]
VAL_LABELS = [2, 0, 1]


def write_split(root: Path, split: str, labels: List[int], first_id: int) -> List[str]:
    """Write one JPEG per label and ``<split>2018.json``; returns the images' file names, in annotation order."""
    supercategory = {category_id: supercat for category_id, _, supercat in CATEGORIES}
    images, annotations, file_names = [], [], []
    for index, label in enumerate(labels):
        image_id = first_id + index
        file_name = f'train_val2018/{supercategory[label]}/{label}/{split}_{index:04x}.jpg'
        pixels = np.random.default_rng(image_id).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        (root / file_name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / file_name)
        images.append(dict(id=image_id, file_name=file_name, width=32, height=24, license=1))
        annotations.append(dict(id=image_id, image_id=image_id, category_id=label))
        file_names.append(file_name)
    categories = [dict(id=category_id, name=name, supercategory=supercat)
                  for category_id, name, supercat in CATEGORIES]
    write_json(root / f'{split}2018.json', dict(images=images, annotations=annotations, categories=categories))
    return file_names


def write_json(path: Path, content: Dict) -> None:
    path.write_text(json.dumps(content))


@pytest.fixture(scope='module')
def inat_root(tmp_path_factory) -> Path:
    """A data root holding ``train2018.json``, ``val2018.json`` and ``train_val2018/``."""
    root = tmp_path_factory.mktemp('inat2018')
    write_split(root, 'train', TRAIN_LABELS, first_id=100)
    write_split(root, 'val', VAL_LABELS, first_id=500)
    return root


def test_reads_paths_labels_and_class_names(inat_root):
    dataset = INaturalist2018(ann_file='train2018.json', data_root=str(inat_root))
    assert len(dataset) == len(TRAIN_LABELS)
    expected_names = [f'train_val2018/{("Plantae", "Fungi", "Aves")[label]}/{label}/train_{index:04x}.jpg'
                      for index, label in enumerate(TRAIN_LABELS)]
    assert [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))] == \
        [str(inat_root / name) for name in expected_names]
    assert dataset.get_gt_labels().tolist() == TRAIN_LABELS
    assert dataset.CLASSES == dataset.metainfo['classes'] == CLASSES  # names in category id order

    val = INaturalist2018(ann_file='val2018.json', data_root=str(inat_root), test_mode=True)
    assert val.get_gt_labels().tolist() == VAL_LABELS and val.CLASSES == CLASSES


def test_an_annotation_of_an_unlisted_image_is_an_error(inat_root, tmp_path):
    content = json.loads((inat_root / 'val2018.json').read_text())
    content['annotations'][1]['image_id'] = 999
    write_json(tmp_path / 'val2018.json', content)
    with pytest.raises(ValueError, match=r"val2018\.json: an annotation names image id 999, which is not"):
        INaturalist2018(ann_file='val2018.json', data_root=str(tmp_path))


@pytest.mark.parametrize('section', ['annotations', 'categories'])
def test_a_category_id_outside_the_label_range_is_an_error(section, inat_root, tmp_path):
    content = json.loads((inat_root / 'val2018.json').read_text())
    content[section][0]['category_id' if section == 'annotations' else 'id'] = 3
    write_json(tmp_path / 'val2018.json', content)
    with pytest.raises(ValueError, match=rf'val2018\.json: category id 3 in "{section}" is outside \[0, 3\)'):
        INaturalist2018(ann_file='val2018.json', data_root=str(tmp_path))


def build_from_config(cfg: Config, loader: str, data_root: Path, ann_file: str) -> INaturalist2018:
    """The data set of ``cfg[loader]``, reading ``ann_file`` under ``data_root``."""
    init_default_scope(cfg.default_scope)
    dataset_cfg = cfg[loader].dataset
    assert dataset_cfg.type == 'INaturalist2018'
    return DATASETS.build(dict(dataset_cfg, data_root=str(data_root), ann_file=ann_file))


@pytest.mark.parametrize('loader,ann_file,labels', [('train_dataloader', 'train2018.json', TRAIN_LABELS),
                                                    ('val_dataloader', 'val2018.json', VAL_LABELS)])
def test_config_pipelines_produce_224_crops(loader, ann_file, labels, inat_root):
    cfg = Config.fromfile(INAT_CONFIG)
    assert cfg[loader].dataset.ann_file == ann_file and cfg[loader].dataset.data_root == 'data/inat2018/'
    dataset = build_from_config(cfg, loader, inat_root, ann_file)
    item = dataset[0]
    assert item['inputs'].shape == (3, 224, 224) and item['inputs'].dtype == torch.uint8
    assert item['data_samples'].gt_label.tolist() == [labels[0]]


def test_config_model_trains_one_iteration_on_the_cpu(inat_root):
    cfg = Config.fromfile(INAT_CONFIG)
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == 8142
    assert cfg.val_evaluator == dict(type='Accuracy', topk=(1, 5))
    # no SyncBN outside a process group, no pre-trained checkpoint, the tiny set's 3 classes
    cfg.model.backbone.update(norm_cfg=dict(type='BN'), init_cfg=None)
    cfg.model.head.num_classes = 3
    cfg.model.data_preprocessor = dict(cfg.data_preprocessor, num_classes=3)
    dataset = build_from_config(cfg, 'train_dataloader', inat_root, 'train2018.json')
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    head_before = model.head.fc.weight.detach().clone()

    model.train()
    log_vars = model.train_step(pseudo_collate([dataset[0], dataset[1]]), optim_wrapper)

    assert torch.isfinite(log_vars['loss'])
    assert not torch.equal(model.head.fc.weight, head_before)
