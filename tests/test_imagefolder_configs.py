"""The image-folder configs: views of 3 channels from a folder of mixed image modes, a head sized by the data,
no kNN evaluation without labels and a kNN split in the labelled variant."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS

from conftest import REPO_ROOT
from image_folders import MIXED_MODES, write_image_folder
from pic_plugin.datasets import UnlabelledImageFolder, VisitKey

CONFIGS = REPO_ROOT / 'configs' / 'pic'
CPU_CONFIG = CONFIGS / 'pic_resnet18-w16_1xb128-coslr-20e_imagefolder.py'
GPU_CONFIG = CONFIGS / 'pic_resnet50_8xb64-coslr-200e_imagefolder.py'
KNN_CONFIG = CONFIGS / 'pic_resnet18-w16_1xb128-coslr-20e_imagefolder-knn.py'


def load(config):
    import pic_plugin  # noqa: F401
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    return cfg


@pytest.mark.parametrize('config, size', [(CPU_CONFIG, 32), (GPU_CONFIG, 224)], ids=['cpu', 'gpu'])
def test_the_configs_turn_a_folder_of_mixed_modes_into_3_channel_views(tmp_path, config, size):
    write_image_folder(tmp_path, 2 * len(MIXED_MODES), nested=True)
    cfg = load(config)
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=str(tmp_path)))
    assert type(dataset) is UnlabelledImageFolder and len(dataset) == 2 * len(MIXED_MODES)
    views = [dataset[VisitKey(index, seed=0, epoch=0, position=index)]['inputs'][0]  # one view per image (PIC)
             for index in range(len(dataset))]
    assert {(tuple(view.shape), view.dtype) for view in views} == {((3, size, size), torch.uint8)}


@pytest.mark.parametrize('config', [CPU_CONFIG, GPU_CONFIG], ids=['cpu', 'gpu'])
def test_the_head_waits_for_the_data_and_nothing_evaluates_without_labels(config):
    cfg = load(config)
    model = MODELS.build(cfg.model)
    assert model.head.num_classes is None and model.head.rows is None  # InstanceCountCheckHook sizes it
    assert {'type': 'InstanceCountCheckHook'} in cfg.custom_hooks
    assert cfg.train_dataloader.drop_last is True
    assert cfg.train_dataloader.sampler == dict(type='KeyedDefaultSampler', shuffle=True)
    assert all(cfg.get(key) is None for key in ('val_dataloader', 'val_cfg', 'val_evaluator'))


def test_the_gpu_recipe_scores_all_rows_split_over_the_gpus():
    head = load(GPU_CONFIG).model.head
    assert (head.negatives, head.sharded, head.temperature) == ('full', True, 0.2)


def test_the_labelled_variant_evaluates_a_labelled_split_with_the_weighted_knn():
    cfg = load(KNN_CONFIG)
    splits = cfg.val_dataloader.dataset
    assert splits.type == 'KNNSplits' and cfg.val_evaluator.type == 'WeightedKNN'
    assert [(split.type, split.data_root, split.data_prefix) for split in (splits.train, splits.test)] == [
        ('CustomDataset', 'data/my_labelled_images/', 'train'), ('CustomDataset', 'data/my_labelled_images/', 'test')]
    assert [step['type'] for step in splits.test.pipeline] == [
        'LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs']
    assert cfg.train_dataloader.dataset.type == 'UnlabelledImageFolder' and cfg.model.head.num_classes == 'auto'
