"""Pictures of what a checkpoint learned: a 2-D map of its kNN features and a nearest-neighbour retrieval grid.

    python tools/visualize_features.py CONFIG CHECKPOINT [--out-dir DIR] [--out-prefix PREFIX] [--work-dir DIR]
        [--max-points 2000] [--num-queries 8] [--num-neighbours 8] [--method auto|tsne|umap] [--cfg-options k=v ...]

Extracts the kNN features (``model.knn_feature``) that the config's weighted-kNN validation uses
(``val_dataloader``, a ``KNNSplits`` of labelled reference and held-out images, through the model's ``val_step``)
for an evenly spaced subset of at most ``--max-points`` images, with a progress bar, and draws

* ``tsne`` (``umap`` where umap-learn is installed): the features in 2-D, coloured by label;
* ``retrieval``: held-out images (left, blue) and their nearest reference images by cosine similarity, framed
  green where the neighbour has the query's label and red where it has another.

Both go to the config's visualizer (``visualizer.add_image``), so every backend in ``vis_backends`` receives
them (``LocalVisBackend``: ``WORK_DIR/TIMESTAMP/vis_data/vis_image/{name}_{epoch}.png``; TensorBoard, W&B); with
``--out-dir`` they are also written as ``OUT_DIR/{PREFIX}{name}.png``.
"""
import argparse
import os
import os.path as osp

import mmcv
from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS
from torch.utils.data import Subset

from pic_plugin import check_custom_imports
from pic_plugin.utils.progress import track_progress
from pic_plugin.visualization import KNNFeatureCollector, display_image, draw_feature_pictures, swaps_channels


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw the kNN features of a checkpoint')
    parser.add_argument('config', help='pre-training config with a KNNSplits val_dataloader')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', help='also write the pictures as PNG files into this folder')
    parser.add_argument('--out-prefix', default='', help='file name prefix of the PNGs under --out-dir')
    parser.add_argument('--work-dir', help='the dir of the logs and the visualizer '
                        '(default: ./work_dirs/visualize_features/CONFIG_NAME)')
    parser.add_argument('--max-points', type=int, default=2000, help='most images whose features are drawn')
    parser.add_argument('--num-queries', type=int, default=8, help='held-out images (rows) of the grid')
    parser.add_argument('--num-neighbours', type=int, default=8, help='neighbours per query')
    parser.add_argument('--method', choices=['auto', 'tsne', 'umap'], default='auto',
                        help='2-D embedding; auto: UMAP where umap-learn is installed, else t-SNE')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. val_dataloader.num_workers=0')
    return parser.parse_args()


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied and a work dir.

    Raises:
        ValueError: If the config has no validation data set to draw.
    """
    cfg = Config.fromfile(args.config)
    check_custom_imports(cfg)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('val_dataloader') is None:
        raise ValueError(f'{args.config} has no val_dataloader: add the weighted-kNN validation, e.g. '
                         "val_dataloader with dataset=dict(type='KNNSplits', train=..., test=...).")
    cfg.load_from = None
    cfg.resume = False
    cfg.work_dir = args.work_dir or osp.join('./work_dirs', 'visualize_features',
                                             osp.splitext(osp.basename(args.config))[0])
    return cfg


def main() -> None:
    args = parse_args()
    cfg = build_config(args)
    runner = Runner.from_cfg(cfg)  # the default scope, logger, model and the visualizer with every backend
    checkpoint = runner.load_checkpoint(args.checkpoint)
    model = runner.model
    model.eval()

    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    collector = KNNFeatureCollector(dataset, args.max_points)
    subset = Subset(dataset, collector.positions.tolist())
    loader = runner.build_dataloader(
        dict(cfg.val_dataloader, dataset=subset, sampler=dict(type='DefaultSampler', shuffle=False)))
    for data_batch in track_progress(loader, len(subset), 'kNN features', unit='images',
                                     count=lambda batch: len(batch['data_samples'])):
        collector.add(model.val_step(data_batch))
    features = collector.gather()

    step = checkpoint.get('meta', {}).get('epoch', 0)
    bgr_to_rgb = swaps_channels(model.data_preprocessor)
    pictures = draw_feature_pictures(
        features, lambda index: display_image(dataset, index, bgr_to_rgb), args.num_queries, args.num_neighbours,
        args.method, dataset.metainfo.get('classes'), title_suffix=f', {osp.basename(args.checkpoint)}')
    written = []
    local_backend = runner.visualizer.get_backend('LocalVisBackend')
    for name, image in pictures.items():
        runner.visualizer.add_image(name, image, step=step)
        if local_backend is not None:
            written.append(osp.join(runner.log_dir, 'vis_data', 'vis_image', f'{name}_{step}.png'))
        if args.out_dir is not None:
            os.makedirs(args.out_dir, exist_ok=True)
            written.append(osp.join(args.out_dir, f'{args.out_prefix}{name}.png'))
            mmcv.imwrite(mmcv.rgb2bgr(image), written[-1])

    print('\n' + '=' * 72)
    print(f'config:            {args.config}')
    print(f'checkpoint:        {args.checkpoint}')
    print(f'features of:       {len(features.indices):,} images ({int(features.is_test.sum()):,} held out)')
    for path in written:
        print(f'picture:           {path}')
    print('=' * 72)


if __name__ == '__main__':
    main()
