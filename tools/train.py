"""Train with a pic_plugin config, as mmpretrain's tools/train.py does (for users without ``mim``).

    python tools/train.py configs/pic_r50.py [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh configs/pic_r50.py 8
"""
import argparse
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from pic_plugin import check_custom_imports
from pic_plugin.utils.launcher import add_launcher_arguments, parse_launcher_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or (no value) from the latest one in the work dir')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--no-validate', action='store_true', help='skip the validation during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch size over auto_scale_lr.base_batch_size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    add_launcher_arguments(parser)
    return parse_launcher_args(parser)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config."""
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:  # as mmpretrain's tools/train.py; LazyCorrectedSGDConstructor keeps the row update under it
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        cfg.optim_wrapper.type = 'AmpLazyCorrectedSGD' if wrapper_type == 'LazyCorrectedSGD' else 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def init_cpu_process_group(cfg: Config) -> None:
    """Join the launcher's process group on a machine without CUDA.

    mmengine 0.10.7's ``pytorch`` launcher always calls ``torch.cuda.set_device``; when the group already
    exists, the runner uses it as it is. CPU configs also set ``model_wrapper_cfg`` with ``device_ids=None``.
    """
    if cfg.launcher == 'pytorch' and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend=cfg.env_cfg.get('dist_cfg', {}).get('backend', 'gloo'))


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    check_custom_imports(cfg)
    cfg = merge_args(cfg, args)
    init_cpu_process_group(cfg)
    # as mmpretrain's tools/train.py: the configs' runner_type (HostResumeRunner) comes from the registry
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
