"""Tests of ``KNNSplits``: mmpretrain ``CustomDataset`` image folders written to ``tmp_path``, wrapped together."""
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS
from PIL import Image

from pic_plugin.datasets import KNNSplits
from pic_plugin.evaluation import WeightedKNN, topk_accuracy, weighted_knn_classify

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


def write_image_folder(root, images_per_class, seed):
    """``root/{cat,dog}/{index}.png``: 8x8 RGB images whose brightness depends on the class."""
    rng = np.random.default_rng(seed)
    for class_index, class_name in enumerate(('cat', 'dog')):
        (root / class_name).mkdir(parents=True)
        for index in range(images_per_class):
            pixels = rng.integers(0, 100, (8, 8, 3)) + 150 * class_index
            Image.fromarray(pixels.astype(np.uint8)).save(root / class_name / f'{index}.png')
    return root


@pytest.fixture(scope='module')
def image_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('knn_images')
    return write_image_folder(root / 'train', 3, seed=0), write_image_folder(root / 'test', 2, seed=1)


def folder_config(root, **kwargs):
    return dict(type='CustomDataset', data_root=str(root), pipeline=PIPELINE, **kwargs)


def test_items_are_the_wrapped_items_marked_with_their_split(image_folders):
    train_root, test_root = image_folders
    test_set = CustomDataset(data_root=str(test_root), pipeline=PIPELINE)
    splits = DATASETS.build(dict(type='KNNSplits', train=folder_config(train_root), test=test_set))
    assert len(splits) == 6 + 4
    assert splits.metainfo == test_set.metainfo and splits.metainfo['classes'] == ('cat', 'dog')
    expected_splits = ['train'] * 6 + ['test'] * 4
    assert [splits[index]['data_samples'].knn_split for index in range(10)] == expected_splits
    assert [int(splits[index]['data_samples'].gt_label) for index in range(10)] == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    item = splits[7]
    assert set(item) == {'inputs', 'data_samples'} and item['inputs'].shape == (3, 8, 8)
    assert torch.equal(item['inputs'], test_set[1]['inputs'])
    assert item['data_samples'].img_path == test_set[1]['data_samples'].img_path
    assert splits[-1]['data_samples'].img_path == test_set[3]['data_samples'].img_path
    assert splits.get_data_info(2)['knn_split'] == 'train' and splits.get_data_info(6)['knn_split'] == 'test'
    with pytest.raises(IndexError, match='index 10 out of range for 10 items'):
        splits[10]


def test_metainfo_is_a_copy(image_folders):
    splits = KNNSplits(train=folder_config(image_folders[0]), test=folder_config(image_folders[1]))
    splits.metainfo['classes'] = ('changed',)
    assert splits.metainfo['classes'] == ('cat', 'dog')


def test_lazy_init_defers_loading_of_both_sets(image_folders):
    train_root, test_root = image_folders
    lazy = KNNSplits(train=folder_config(train_root, lazy_init=True), test=folder_config(test_root, lazy_init=True),
                     lazy_init=True)
    assert not lazy._fully_initialized and not lazy.train._fully_initialized and not lazy.test._fully_initialized
    assert len(lazy) == 10  # len() loads
    assert lazy.metainfo['classes'] == ('cat', 'dog')  # CustomDataset finds its classes when loading
    assert lazy._fully_initialized and lazy.train._fully_initialized and lazy.test._fully_initialized
    eager = KNNSplits(train=folder_config(train_root, lazy_init=True), test=folder_config(test_root, lazy_init=True))
    assert eager.train._fully_initialized and eager.test._fully_initialized
    first_access = KNNSplits(train=folder_config(train_root), test=folder_config(test_root), lazy_init=True)
    assert first_access[9]['data_samples'].knn_split == 'test' and first_access._fully_initialized


def test_errors_name_value_and_fix(image_folders, tmp_path):
    train_root, test_root = image_folders
    other_classes = folder_config(test_root, classes=['dog', 'cat'])
    with pytest.raises(ValueError, match=r"train set has classes \['cat', 'dog'\] \(2 classes\) but the test set "
                                         r"\['dog', 'cat'\].*give both sets the same classes"):
        KNNSplits(train=folder_config(train_root), test=other_classes)
    lazy_mismatch = KNNSplits(train=folder_config(train_root), test=other_classes, lazy_init=True)
    with pytest.raises(ValueError, match='give both sets the same classes'):
        lazy_mismatch.full_init()
    with pytest.raises(ValueError, match='test must be a dataset config dict or a dataset, got int'):
        KNNSplits(train=folder_config(train_root), test=3)
    unpacked = KNNSplits(train=folder_config(train_root),
                         test=dict(folder_config(test_root), pipeline=[dict(type='LoadImageFromFile')]))
    with pytest.raises(ValueError, match=r"item 0 of the test set is dict without a data sample.*PackInputs"):
        unpacked[6]


def fake_predict(batch):
    """What the algorithm's predict() does for kNN: store a 1-D feature per sample (here the centred pixels)."""
    for inputs, data_sample in zip(batch['inputs'], batch['data_samples']):
        data_sample.knn_feature = inputs.float().flatten() - 128
    return batch['data_samples']


def test_runner_dataloader_into_metric(image_folders):
    train_root, test_root = image_folders
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataloader = Runner.build_dataloader(dict(
            dataset=dict(type='KNNSplits', train=folder_config(train_root), test=folder_config(test_root)),
            sampler=dict(type='DefaultSampler', shuffle=False), batch_size=4, num_workers=0))
    evaluator = Evaluator(WeightedKNN(k=3, tau=0.5))
    evaluator.dataset_meta = dataloader.dataset.metainfo
    for batch in dataloader:
        evaluator.process(fake_predict(batch), batch)
    result = evaluator.evaluate(len(dataloader.dataset))

    dataset = dataloader.dataset
    train_features = torch.stack([dataset.train[index]['inputs'].float().flatten() - 128 for index in range(6)])
    test_features = torch.stack([dataset.test[index]['inputs'].float().flatten() - 128 for index in range(4)])
    votes = weighted_knn_classify(train_features, torch.tensor([0, 0, 0, 1, 1, 1]), test_features, 2, k=3, tau=0.5)
    top1, top5 = topk_accuracy(votes, torch.tensor([0, 0, 1, 1]))
    assert result == {'knn/top1': top1, 'knn/top5': top5}
    assert top1 == 100.0  # the classes differ in brightness, so the neighbours are of the right class
