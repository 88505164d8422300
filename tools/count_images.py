"""Count the training images of a config (the head's ``num_classes='auto'``) and, with --check, load each one.

    python tools/count_images.py CONFIG [--cfg-options k=v ...] [--check [--workers N]]

Builds the config's ``train_dataloader.dataset`` (a missing folder, or one without images, stops here with the
path looked at and the layout expected) and prints its size: the number of instance classes, which
``num_classes='auto'`` gives the head. ``--check`` then decodes every image as training does (the pipeline's
``LoadImageFromFile``), in N processes, and lists each one that fails with the reason; the exit status is 1 if
any does.
"""
import argparse
import os
import os.path as osp
import sys
from functools import partial
from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.utils import track_parallel_progress
from mmpretrain.registry import DATASETS

from pic_plugin import check_custom_imports


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.dataset.data_root=/path/to/images')
    parser.add_argument('--check', action='store_true', help='decode every image and list those that fail')
    parser.add_argument('--workers', type=int, default=os.cpu_count(),
                        help='processes that decode images for --check (default: one per CPU)')
    return parser.parse_args()


def load_error(loader: LoadImageFromFile, img_path: str) -> Optional[str]:
    """Why ``loader`` cannot load the image, or None if it can."""
    try:
        loader(dict(img_path=img_path))
    except Exception as error:  # whatever stops the file from loading stops training at it
        return f'{type(error).__name__}: {error}'
    return None


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    check_custom_imports(cfg)
    cfg.merge_from_dict(args.cfg_options or {})
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    num_images = len(dataset)
    print(f'{num_images} training images under {osp.abspath(dataset.img_prefix)}: '
          f"num_classes='auto' gives the head {num_images} rows (--cfg-options model.head.num_classes={num_images} "
          'pins that size)')
    if not args.check:
        return
    loader = next((t for t in dataset.pipeline.transforms if isinstance(t, LoadImageFromFile)), LoadImageFromFile())
    paths = [dataset.get_data_info(index)['img_path'] for index in range(num_images)]
    errors = track_parallel_progress(partial(load_error, loader), paths, nproc=args.workers, chunksize=64)
    failed = [(path, error) for path, error in zip(paths, errors) if error is not None]
    print(f'\n{num_images - len(failed)} of {num_images} images load' + (', these do not:' if failed else '.'))
    for path, error in failed:
        print(f'  {path}: {error}')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
