"""Stop before a run when a dataset's folder is missing or empty, naming the config key, the path and the layout.

Without this check mmpretrain's datasets fail inside the runner with a bare ``FileNotFoundError`` (a missing
folder) or ``RuntimeError: Found 0 files`` (an empty one), which name neither the config key nor the fix.
"""
import os
import os.path as osp
from typing import Any, Iterator, Optional, Tuple

from mmengine.config import Config

LAYOUTS = {
    'CustomDataset': 'one sub-folder per class holding its images (PREFIX/CLASS/xxx.png; the class names are only '
                     'used by the kNN), or the images with an ann_file that lists them',
    'ImageNet': "mmpretrain's ImageNet layout: train/ with one folder per class and val/, plus meta/train.txt and "
                'meta/val.txt',
    'CIFAR10': 'the Python version of CIFAR-10 (cifar-10-batches-py/), or set download=True to fetch it',
    'INaturalist2018': "the iNaturalist 2018 images and the challenge's train2018.json / val2018.json",
}
SELF_CHECKED = ('UnlabelledImageFolder',)  # its own error names the key and the layout when the folder has no images
PREPARE_DIGITS = 'for the digits configs, `python tools/prepare_digits.py` writes data/digits'


def dataset_configs(node: Any, key: str) -> Iterator[Tuple[str, dict]]:
    """Every dataset config at or below ``node`` that reads from a ``data_root``, with its config key."""
    if not isinstance(node, dict):
        return
    if node.get('type') and node.get('data_root') and node['type'].split('.')[-1] not in SELF_CHECKED:
        yield key, node
    for name, value in node.items():
        yield from dataset_configs(value, f'{key}.{name}')


def image_folder(dataset: dict) -> str:
    """The folder a dataset config reads its images from: ``data_root`` joined with ``data_prefix`` (or ``split``)."""
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path')
    return osp.join(dataset['data_root'], prefix or dataset.get('split') or '')


def first_file(folder: str) -> Optional[str]:
    """Some file at any depth under ``folder`` (the first that ``os.walk`` meets), or None."""
    for root, _, files in os.walk(folder):
        if files:
            return osp.join(root, files[0])
    return None


def check_data_roots(cfg: Config, *loaders: str) -> None:
    """Raise before the runner starts if a dataset of ``loaders`` (e.g. ``'train_dataloader'``) has no images.

    Raises:
        FileNotFoundError: Naming the config key, the folder looked at (relative to the working directory, as
            mmengine reads it), the layout the dataset type expects and how to set the key.
    """
    for loader in loaders:
        for key, dataset in dataset_configs((cfg.get(loader) or {}).get('dataset'), f'{loader}.dataset'):
            folder = image_folder(dataset)
            problem = ('does not exist' if not osp.isdir(folder) else
                       'holds no files' if first_file(folder) is None else None)
            if problem is None:
                continue
            kind = dataset['type'].split('.')[-1]  # 'mmpretrain.ImageNet' -> 'ImageNet'
            layout = LAYOUTS.get(kind, 'the layout its dataset type documents')
            raise FileNotFoundError(
                f'{key}: the folder {osp.abspath(folder)} (data_root={dataset["data_root"]!r}, data_prefix='
                f'{dataset.get("data_prefix")!r}, from the working directory {os.getcwd()}) {problem}. {kind} '
                f'expects {layout}. Point {key}.data_root (and data_prefix) at the data, e.g. --cfg-options '
                f'{key}.data_root=/path/to/data, or run from the folder that holds {dataset["data_root"]}; '
                f'{PREPARE_DIGITS}.')
