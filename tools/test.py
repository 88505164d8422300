"""Evaluate a checkpoint with a pic_plugin config's test loop (the weighted kNN for pre-training configs).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...] [--launcher pytorch]
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from pic_plugin import check_custom_imports
from pic_plugin.utils import check_data_roots
from pic_plugin.utils.launcher import add_launcher_arguments, parse_launcher_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    add_launcher_arguments(parser)
    return parse_launcher_args(parser)


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    check_custom_imports(cfg)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    check_data_roots(cfg, 'test_dataloader')
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    Runner.from_cfg(cfg).test()


if __name__ == '__main__':
    main()
