"""A short PIC run of ResNet-50 at 224 px through tools/train.py: images/s and peak GPU memory, per variant.

    python tools/benchmarks/bench_r50_run.py --device cuda                   # 4 variants, generated images
    python tools/benchmarks/bench_r50_run.py --device cuda --data-root /path/to/images --images 12800

Every variant trains ``configs/pic_r50.py`` (PIC's recipe: ResNet-50, the 2-layer MLP neck, augmentation of
SimCLR strength at 224 px, ``K`` = 65,536 recent negatives, ``LazyCorrectedSGD``) with the paper's table of
``N`` = 1,281,167 rows, on one process, for ``--iters`` iterations of batch ``--batch-size`` (the recipe loaded
with mmengine's ``Config.fromfile``, changed for the run and written by ``Config.dump`` to
``WORK_DIR/pic_r50_short.py``):

* ``device-fp32`` / ``host-fp32``: the table on the GPU, or in pinned host memory (``model.head.placement``);
* ``device-amp`` / ``host-amp``: the same under ``--amp`` (float16 autocast and dynamic loss scaling through
  mmengine's ``AmpOptimWrapper``; GPU only);
* ``device-bf16`` / ``host-bf16``: ``optim_wrapper.dtype=bfloat16`` (CPU or GPU).

The images are the first ``--images`` of ``--data-root`` (any folder, read as ``UnlabelledImageFolder``), or as
many generated noise JPEGs of 256 x 256 px; their count does not change the cost of a step, the table's ``N``
does, so ``InstanceCountCheckHook`` (which would size the table to the images) is left out, and so is the
checkpoint. The run is mmengine's: its logger records each iteration's ``time``, ``data_time`` and, on CUDA, the
peak ``memory`` allocated; this script reads them back from ``vis_data/scalars.json`` and prints, per variant,
the median over the iterations after ``--warmup``, ``images/s = batch / median time`` and the ratio to the first
variant. The variants run one after the other in one invocation, so their ratios come from the same machine
state.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.config import Config
from PIL import Image

from benchmark_utils import median, print_header, print_table, spread

REPO_ROOT = Path(__file__).resolve().parents[2]
PRECISIONS = {'fp32': [], 'amp': ['--amp'], 'bf16': ['--cfg-options', 'optim_wrapper.dtype=bfloat16']}
PLACEMENTS = ('device', 'host')
IMAGENET_INSTANCES = 1_281_167


def write_images(folder: Path, count: int, seed: int) -> None:
    """``count`` 256 x 256 noise JPEGs, written once: a folder that holds them is used as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob('*.jpg'))) >= count:
        return
    generator = np.random.default_rng(seed)
    for index in range(count):
        pixels = generator.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f'{index:06d}.jpg', quality=90)


def short_config(args: argparse.Namespace, data_root: Path, max_epochs: int) -> Config:
    """``configs/pic_r50.py`` for this run: the table's ``N`` and ``K``, the loader, the images, the hooks, the logging
    of every iteration and the epochs; the rest as the recipe sets it."""
    # the plugin's modules are imported by tools/train.py, which builds the run; here the config is only edited
    cfg = Config.fromfile(REPO_ROOT / 'configs' / 'pic_r50.py', import_custom_modules=False)
    cfg.model.head.update(num_classes=args.num_instances, num_negatives=args.num_negatives)
    loader = cfg.train_dataloader
    loader.update(batch_size=args.batch_size, num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
    # assigned whole, not updated: ConfigDict.update merges into a dict, which would keep the recipe's keys
    loader.sampler = dict(type='KeyedDefaultSampler', shuffle=True)
    loader.dataset = dict(type='UnlabelledImageFolder', data_root=str(data_root), indices=args.images,
                          pipeline=cfg.train_pipeline)
    # N rows over a few images: no InstanceCountCheckHook (it sizes the table to the images), no checkpoint
    cfg.custom_hooks = [dict(type='NaNGuardHook')]
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor = dict(window_size=1)
    cfg.train_cfg.max_epochs = max_epochs
    return cfg


def read_scalars(work_dir: Path) -> List[dict]:
    """The training iterations mmengine's logger wrote to ``vis_data/scalars.json`` in the newest run, in order."""
    path = sorted(work_dir.glob('*/vis_data/scalars.json'))[-1]  # mmengine names each run's folder by its time
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if 'time' in record and 'loss' in record]


def run_variant(name: str, config: Path, work_dir: Path, device: str) -> Tuple[List[dict], float]:
    """Train one variant through tools/train.py; its logged iterations and wall-clock seconds."""
    placement, precision = name.split('-')
    command = [sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir),
               *PRECISIONS[precision]]
    options = [f'model.head.placement={placement}']
    command += options if '--cfg-options' in command else ['--cfg-options', *options]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='') if device == 'cpu' else None  # the CPU run hides any GPU
    print(f'{name}: {" ".join(command)}', flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f'{name} failed (exit {result.returncode}); the end of its output:\n{result.stderr[-3000:]}')
    return read_scalars(work_dir), seconds


def summarise(name: str, records: List[dict], warmup: int, batch_size: int) -> Dict[str, str]:
    """The median step, its spread, the data time, images/s and the peak memory of one variant."""
    timed = records[warmup:]
    if not timed:
        sys.exit(f'{name}: {len(records)} iterations logged, none after --warmup {warmup}: raise --iters.')
    step = median([record['time'] for record in timed])
    memory = max((record['memory'] for record in records if 'memory' in record), default=None)
    return dict(step=step, spread=spread([record['time'] for record in timed]),
                data=median([record['data_time'] for record in timed]), images_per_second=batch_size / step,
                memory='n/a (CPU)' if memory is None else f'{memory / 1024:.2f} GiB', iterations=len(timed))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--variants', nargs='+', default=None,
                        help='PLACEMENT-PRECISION, PLACEMENT in device / host, PRECISION in fp32 / amp / bf16 '
                             '(default: device-fp32 host-fp32 device-amp host-amp on CUDA, the bf16 ones on CPU)')
    parser.add_argument('--batch-size', type=int, default=64, help='per GPU, as configs/pic_r50.py')
    parser.add_argument('--iters', type=int, default=60, help='training iterations of each variant')
    parser.add_argument('--warmup', type=int, default=10, help='first iterations left out of the medians')
    parser.add_argument('--num-instances', type=int, default=IMAGENET_INSTANCES, help="the table's N")
    parser.add_argument('--num-negatives', type=int, default=65536, help="K, PIC's recent negatives")
    parser.add_argument('--images', type=int, default=2048, help='images read or generated')
    parser.add_argument('--data-root', default=None, help='a folder of images (default: generated noise JPEGs)')
    parser.add_argument('--num-workers', type=int, default=8, help='data loader workers')
    parser.add_argument('--work-dir', default='work_dirs/bench_r50_run')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    args.variants = args.variants or [f'{placement}-{precision}' for precision in (
        ('fp32', 'amp') if args.device == 'cuda' else ('fp32', 'bf16')) for placement in PLACEMENTS]
    for name in args.variants:
        placement, _, precision = name.partition('-')
        if placement not in PLACEMENTS or precision not in PRECISIONS:
            parser.error(f'--variants {name}: expected PLACEMENT-PRECISION with PLACEMENT in {PLACEMENTS} and '
                         f'PRECISION in {tuple(PRECISIONS)}, e.g. host-amp.')
        if precision == 'amp' and args.device != 'cuda':
            parser.error(f"--variants {name}: --amp needs a GPU (mmengine's AmpOptimWrapper); on the CPU use "
                         f'{placement}-bf16.')
    if args.images < args.batch_size:
        parser.error(f'--images {args.images} is below --batch-size {args.batch_size}: every step takes a full '
                     'batch (drop_last).')
    if args.num_instances < args.num_negatives + args.batch_size:
        parser.error(f'--num-instances {args.num_instances} is below K + B = {args.num_negatives} + '
                     f'{args.batch_size}: raise it or lower --num-negatives.')
    return args


def main() -> None:
    args = parse_args()
    print_header('PIC, ResNet-50 at 224 px, through tools/train.py: images/s and peak memory',
                 torch.device(args.device))
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)  # the config goes there, also beside a --data-root
    data_root = Path(args.data_root).resolve() if args.data_root else work_dir / 'images'
    if args.data_root is None:
        write_images(data_root, args.images, args.seed)
    iters_per_epoch = args.images // args.batch_size
    config = work_dir / 'pic_r50_short.py'
    short_config(args, data_root, max_epochs=-(-args.iters // iters_per_epoch)).dump(config)
    print(f'sizes:    batch {args.batch_size}, N = {args.num_instances:,} rows, K = {args.num_negatives:,}, '
          f'{args.images} images from {data_root}, {args.num_workers} loader workers')
    print(f'timing:   {args.iters} iterations per variant (whole epochs of {iters_per_epoch}), medians over those '
          f'after the first {args.warmup}', flush=True)
    results = {}
    for name in args.variants:
        records, seconds = run_variant(name, config, work_dir / name, args.device)
        results[name] = summarise(name, records, args.warmup, args.batch_size)
        print(f'{name}: {len(records)} iterations in {seconds:.0f} s', flush=True)
    first = results[args.variants[0]]['images_per_second']
    print()
    print_table(['variant', 'median s/step', 'IQR', 'data s/step', 'images/s', f'/ {args.variants[0]}',
                 'peak memory', 'steps'],
                [[name, f'{r["step"]:.3f}', r['spread'], f'{r["data"]:.3f}', f'{r["images_per_second"]:.1f}',
                  f'{r["images_per_second"] / first:.2f}', r['memory'], str(r['iterations'])]
                 for name, r in results.items()])


if __name__ == '__main__':
    main()
