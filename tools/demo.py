"""Pre-train on a small real data set on the CPU and compare weighted-kNN accuracy with the random network.

    python tools/demo.py [--config CONFIG] [--work-dir DIR] [--cfg-options k=v ...]

Writes scikit-learn's digits as images (tools/prepare_digits.py), evaluates the randomly initialised network
with the config's kNN evaluator, trains with the config, evaluates again, and prints both accuracies and where
the checkpoint and logs are.
"""
import argparse
import os.path as osp
import sys
from pathlib import Path

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(__file__))
from prepare_digits import prepare_digits  # noqa: E402

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'pic',
                          'pic_resnet18-w16_1xb128-coslr-20e_digits.py')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    prepare_digits(Path(cfg.train_dataloader.dataset.data_root))
    cfg.work_dir = args.work_dir or osp.join('work_dirs', 'demo', osp.splitext(osp.basename(args.config))[0])
    cfg.train_cfg.val_interval = cfg.train_cfg.max_epochs + 1  # evaluated explicitly below
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()  # the initialisation that training starts from (train() does not redo it)
    random_init = runner.val()
    runner.train()
    trained = runner.val()

    checkpoint = osp.join(runner.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    print('\n' + '=' * 72)
    print(f'config:            {args.config}')
    print(f'weighted kNN top-1 (k={cfg.val_evaluator.k}, tau={cfg.val_evaluator.tau}) on held-out images:')
    print(f'  random init:     {random_init["knn/top1"]:.2f}%')
    print(f'  pre-trained:     {trained["knn/top1"]:.2f}%')
    print(f'one run, seed {cfg.randomness.seed}: another seed or CPU lands elsewhere; the mean and spread over seeds')
    print(f'  come from: python tools/analysis_tools/compare_methods.py --run demo {args.config} --seeds 0 1 2 '
          f'--epochs {cfg.train_cfg.max_epochs} --out-dir work_dirs/compare/demo (README: learning quality)')
    print(f'checkpoint:        {checkpoint}')
    print(f'logs:              {runner.log_dir}')
    print('=' * 72)


if __name__ == '__main__':
    main()
