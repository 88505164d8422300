"""A dataset folder that is missing or empty stops a run before its first step, with the key, path and layout."""
import re

import pytest
from mmengine.config import Config

from pic_plugin.utils import check_data_roots


def knn_config(root: str) -> Config:
    """A training set and the kNN's two splits, as the digits configs have them."""
    split = dict(type='CustomDataset', data_root=root, data_prefix='test')
    return Config(dict(
        train_dataloader=dict(dataset=dict(type='CustomDataset', data_root=root, data_prefix='train')),
        val_dataloader=dict(dataset=dict(type='KNNSplits', train=dict(split, data_prefix='train'), test=split))))


def write_image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'not decoded by the check')


def test_folders_with_files_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split in ('train', 'test'):
        write_image(tmp_path / 'data' / split / '3' / 'image.png')
    check_data_roots(knn_config('data'), 'train_dataloader', 'val_dataloader')


def test_a_missing_folder_names_the_key_the_path_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        check_data_roots(knn_config('data'), 'train_dataloader')
    message = str(error.value)
    assert message.startswith(f'train_dataloader.dataset: the folder {tmp_path / "data" / "train"} ')
    assert 'does not exist. CustomDataset expects one sub-folder per class' in message
    assert '--cfg-options train_dataloader.dataset.data_root=/path/to/data' in message


def test_an_empty_kNN_split_is_named_by_its_nested_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / 'data' / 'train' / '3' / 'image.png')
    (tmp_path / 'data' / 'test' / '3').mkdir(parents=True)  # folders, but no image
    check_data_roots(knn_config('data'), 'train_dataloader')  # only what is asked for is checked
    with pytest.raises(FileNotFoundError, match=re.escape('val_dataloader.dataset.test: the folder '
                                                          f'{tmp_path / "data" / "test"} ') + '.* holds no files'):
        check_data_roots(knn_config('data'), 'train_dataloader', 'val_dataloader')


def test_imagenet_by_split_and_unlabelled_folders_are_left_to_their_own_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='mmpretrain.ImageNet', data_root='in1k', split='train'))))
    with pytest.raises(FileNotFoundError, match=r"the folder .*in1k/train .* ImageNet expects mmpretrain's ImageNet"):
        check_data_roots(cfg, 'train_dataloader')
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='UnlabelledImageFolder', data_root='nothing'))))
    check_data_roots(cfg, 'train_dataloader')  # UnlabelledImageFolder raises its own error, naming the same key
