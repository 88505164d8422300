"""Weighted-kNN accuracy (NPID Sec. 3.4) of a finished pre-training checkpoint, with its config's kNN validation.

    python tools/knn_eval.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...] [--launcher pytorch]

Builds the config's ``val_dataloader`` (a ``KNNSplits`` of labelled reference and held-out images) and
``val_evaluator`` (``WeightedKNN``), loads CHECKPOINT into the model and runs mmengine's validation loop once
(``EvalProgressHook`` shows the feature extraction's progress); prints top-1 / top-5. Only the backbone matters
for the score; a checkpoint from a run on a subset of the training set loads with a warning about the head's size
unless ``--cfg-options model.head.num_classes=N``.
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from pic_plugin import check_custom_imports
from pic_plugin.utils import check_data_roots
from pic_plugin.utils.launcher import add_launcher_arguments, parse_launcher_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Weighted kNN accuracy of a checkpoint')
    parser.add_argument('config', help='pre-training config with a kNN val_dataloader and val_evaluator')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs (default: ./work_dirs/knn_eval/CONFIG_NAME)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. val_evaluator.k=20')
    add_launcher_arguments(parser)
    return parse_launcher_args(parser)


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied, the checkpoint as ``load_from``, no resuming, and progress.

    Raises:
        ValueError: If the config has no kNN validation to run.
    """
    cfg = Config.fromfile(args.config)
    check_custom_imports(cfg)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    missing = [key for key in ('val_dataloader', 'val_evaluator', 'val_cfg') if cfg.get(key) is None]
    if missing:
        raise ValueError(f'{args.config} has no {", ".join(missing)}: add the weighted-kNN validation, e.g. '
                         "val_dataloader with dataset=dict(type='KNNSplits', train=..., test=...), "
                         "val_evaluator=dict(type='WeightedKNN', k=200, tau=0.07) and val_cfg=dict().")
    if not any(hook.get('type') == 'EvalProgressHook' for hook in cfg.get('custom_hooks', [])):
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='EvalProgressHook')]
    # mmpretrain's VisualizationHook looks at runner.train_loop after every validation step, even when disabled,
    # which builds the training loader: without it the evaluation needs no training set (an unlabelled folder
    # that is elsewhere now, say)
    cfg.default_hooks = {name: hook for name, hook in (cfg.get('default_hooks') or {}).items()
                         if name != 'visualization'}
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    cfg.resume = False
    cfg.work_dir = args.work_dir or osp.join('./work_dirs', 'knn_eval', osp.splitext(osp.basename(args.config))[0])
    return cfg


def main() -> None:
    args = parse_args()
    cfg = build_config(args)
    check_data_roots(cfg, 'val_dataloader')
    runner = Runner.from_cfg(cfg)
    metrics = runner.val()
    if runner.rank != 0:
        return
    evaluator = cfg.val_evaluator
    print('\n' + '=' * 72)
    print(f'config:            {args.config}')
    print(f'checkpoint:        {args.checkpoint}')
    print(f'weighted kNN (k={evaluator.get("k", 200)}, tau={evaluator.get("tau", 0.07)}) on the held-out images:')
    for name, value in metrics.items():  # knn/top1, knn/top5
        print(f'  {name + ":":<17}{value:.2f}%')
    print('=' * 72)


if __name__ == '__main__':
    main()
