"""Training throughput of PIC (one view) against mmpretrain's SimCLR and MoCo v2 (two views), side by side.

    python tools/benchmarks/bench_throughput.py                       # ResNet-18, 64x64, batch 64, CPU
    python tools/benchmarks/bench_throughput.py --backbone resnet50 --image-size 224 --batch-size 256 \\
        --device cuda

The models share the backbone, the neck's sizes, the batch and the optimiser (SGD, momentum 0.9,
weight decay 1e-4; SimCLR's LARS would only change the optimiser's few element-wise operations):

* PIC: pic_plugin's ``InstanceClassification`` built from the model dict of
  ``configs/pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py`` with the chosen backbone, trained through
  ``LazyCorrectedSGD``. One view; by default the head of the paper's recipe (``N`` = 1,281,167 ImageNet-1k
  instances, ``K`` = 65536 recent negatives), whose recent queue is filled with distinct indices before timing
  (its rows then all carry ``last_step = 0``; filling it by training would take ``K / B`` steps).
* PIC, config head: the same with the config's own head (the tiny config: a full softmax over 1500 classes),
  whose cost is negligible: the difference to PIC is what the paper-size head costs per step.
* PIC, K + B-row table (with recent negatives only): a full softmax over a table of just ``K + B`` rows, so every
  step scores as many classes as PIC's, with the same arithmetic, but its rows are copied in order and nothing
  is picked or corrected: the difference to PIC is what finding, gathering, correcting and writing back
  ``K + B`` scattered rows of the ``N``-row table costs beyond an in-order copy.
* SimCLR: mmpretrain's ``SimCLR`` with its ``NonLinearNeck`` and ``ContrastiveHead`` (tau = 0.1): both views
  go forward and backward.
* MoCo v2: mmpretrain's ``MoCo`` with ``MoCoV2Neck`` and a queue of ``K`` keys (tau = 0.2), as mmpretrain's
  ``mocov2_resnet50_8xb32-coslr-200e_in1k.py``: the key view runs forward only, through the momentum encoder.

A step is the model's ``train_step`` (data preprocessor, forward, loss, backward, optimiser step) on synthetic
uint8 images created on the device once: the data loader and augmentations are left out, so the numbers
measure the models. Each round times ``--steps-per-round`` steps of every model, the order rotated from
round to round; the table gives the median step and ``images/s = batch / median step``. The paper's bounds
follow from counting passes: a SimCLR step costs two forward and two backward passes against PIC's one of
each (bound 2x, goal >= 1.8x); MoCo's second view runs forward only, about 1/3 of a forward-backward pass
(bound about 1.33x, goal >= 1.25x). The classifier's extra work (gathering and updating K + B rows) counts
against PIC.

The floor of the paper head: its three matrix products alone (the logits ``(B, D) x (D, C)`` and their two
gradients, ``C = K + B`` classes, or ``N`` with ``--negatives full``) are timed in the same rounds. "PIC, config
head" plus them is what a PIC step would take if its head cost nothing but its arithmetic, and the ratios that
step would reach are printed: where one is below its goal, the goal is out of reach on this machine whatever the
head's row traffic.

Host memory: ``--malloc reuse`` (the default) keeps freed blocks in the heap, as a GPU's caching allocator does,
for every model alike (see ``benchmark_utils.set_malloc_policy``); ``--malloc system`` leaves glibc's defaults.
"""
import argparse
from pathlib import Path
from typing import Dict, List, NamedTuple

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

import pic_plugin  # noqa: F401  (registers InstanceClassification and InstanceClsHead)
from benchmark_utils import (DistinctIndexStream, add_common_arguments, apply_common_arguments, interleaved_rounds,
                             matrix_products, median, print_header, print_table, spread)
from pic_plugin.engine.optimizers.lazy_corrected_sgd import LazyCorrectedSGD

TINY_CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-coslr-20e_digits.py'
IMAGENET_INSTANCES = 1_281_167
BACKBONES = {
    # name: (backbone config, channels of its last stage, hidden channels of the neck)
    'tiny': (dict(type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16), 128, 512),
    'resnet18': (dict(type='ResNet', depth=18), 512, 2048),
    'resnet50': (dict(type='ResNet', depth=50), 2048, 2048),
}
PIC_NAMES = ('PIC', 'PIC, config head', 'PIC, K + B-row table')
HEAD_PRODUCTS = "the paper head's matrix products"
# (name, bound, goal) of images/s PIC / other
RATIO_GOALS = (('SimCLR', 2.0, 1.8), ('MoCoV2', 1.33, 1.25))


class ModelSpec(NamedTuple):
    """A model to time: its dict, the views per image it takes, the instances its labels come from."""

    cfg: dict
    num_views: int
    num_instances: int


def model_specs(args: argparse.Namespace) -> Dict[str, ModelSpec]:
    """PIC with the head of the flags, PIC with the config's own head, PIC with a ``K + B``-row table (recent
    negatives only), SimCLR and MoCo v2."""
    backbone, channels, hidden = BACKBONES[args.backbone]
    config_pic = Config.fromfile(str(args.config)).model.to_dict()
    config_pic['backbone'] = backbone
    config_pic['neck'].update(in_channels=channels, hid_channels=hidden)
    pic = dict(config_pic, head=dict(config_pic['head'], num_classes=args.num_instances, negatives=args.negatives,
                                     num_negatives=args.num_negatives, placement=args.placement))
    preprocessor, out_channels = pic['data_preprocessor'], pic['neck']['out_channels']
    simclr = dict(type='SimCLR', data_preprocessor=preprocessor, backbone=backbone,
                  neck=dict(type='NonLinearNeck', in_channels=channels, hid_channels=hidden,
                            out_channels=out_channels, num_layers=2, with_avg_pool=True,
                            norm_cfg=dict(type='BN1d')),
                  head=dict(type='ContrastiveHead', loss=dict(type='CrossEntropyLoss'), temperature=0.1))
    mocov2 = dict(type='MoCo', data_preprocessor=preprocessor, backbone=backbone, queue_len=args.num_negatives,
                  feat_dim=out_channels, momentum=0.001,
                  neck=dict(type='MoCoV2Neck', in_channels=channels, hid_channels=hidden,
                            out_channels=out_channels, with_avg_pool=True),
                  head=dict(type='ContrastiveHead', loss=dict(type='CrossEntropyLoss'), temperature=0.2))
    specs = {'PIC': ModelSpec(pic, 1, args.num_instances),
             'PIC, config head': ModelSpec(config_pic, 1, config_pic['head']['num_classes'])}
    if args.negatives == 'recent':
        classes = args.num_negatives + args.batch_size  # the classes of a PIC step, all rows of this table
        small_table = dict(pic, head=dict(pic['head'], num_classes=classes, negatives='full'))
        specs['PIC, K + B-row table'] = ModelSpec(small_table, 1, classes)
    return {**specs, 'SimCLR': ModelSpec(simclr, 2, args.num_instances),
            'MoCoV2': ModelSpec(mocov2, 2, args.num_instances)}


def sgd(model: nn.Module) -> torch.optim.SGD:
    """The same SGD for every model (PIC's recipe: lr 0.03, momentum 0.9, weight decay 1e-4)."""
    return torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)


class TrainStep:
    """One model, its optimiser wrapper and a batch of synthetic images: one training step per call.

    Args:
        spec (ModelSpec): The model dict, its views per image and the number of instances.
        args (argparse.Namespace): The command line (device, batch size, image size, seed).
    """

    def __init__(self, spec: ModelSpec, args: argparse.Namespace) -> None:
        device = torch.device(args.device)
        self.num_views = spec.num_views
        self.model = MODELS.build(spec.cfg).to(device)  # PyTorch's default init: the values do not matter
        self.model.train()
        if spec.cfg['type'] == 'InstanceClassification':
            self.optim_wrapper = LazyCorrectedSGD(sgd(self.model))
            self.optim_wrapper.register_rows(self.model)
            self._fill_recent_queue(args.seed)
        else:
            self.optim_wrapper = OptimWrapper(sgd(self.model))
        generator = torch.Generator(device=device).manual_seed(args.seed)
        shape = (args.batch_size, 3, args.image_size, args.image_size)
        self.views: List[torch.Tensor] = [
            torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=generator)
            for _ in range(spec.num_views)]  # each (B, 3, H, W)
        self.stream = DistinctIndexStream(spec.num_instances, args.batch_size, args.seed + 1)
        self.data_samples: List[DataSample] = []

    def _fill_recent_queue(self, seed: int) -> None:
        """Start PIC's recent-negative queue full of distinct indices, as after ``K / B`` steps."""
        fifo = getattr(self.model.head.negatives, 'recent_indices', None)  # RecentNegatives' FIFO
        if fifo is not None:
            generator = torch.Generator().manual_seed(seed)
            fifo.copy_(torch.randperm(self.model.head.num_classes, generator=generator)[:fifo.numel()])

    def draw_batch(self) -> None:
        """New instance indices for the next step (the images stay: only the labels matter to the cost)."""
        self.data_samples = [DataSample(metainfo=dict(sample_idx=int(index)))
                             for index in self.stream.next_batch()]

    def __call__(self) -> None:
        """One ``train_step``: preprocess, forward, loss, backward, optimiser step."""
        self.model.train_step(dict(inputs=self.views, data_samples=self.data_samples), self.optim_wrapper)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backbone', choices=sorted(BACKBONES), default='resnet18',
                        help="'tiny' is the PIC tiny config's 16-wide ResNet-18 (CIFAR stem)")
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-instances', type=int, default=IMAGENET_INSTANCES, help="PIC's N")
    parser.add_argument('--negatives', choices=['recent', 'full'], default='recent', help="PIC's negatives")
    parser.add_argument('--num-negatives', type=int, default=65536,
                        help="K: PIC's recent negatives and MoCo's queue length (a multiple of the batch)")
    parser.add_argument('--placement', choices=['host', 'device'], default='device',
                        help="where PIC's table lives")
    parser.add_argument('--warmup-steps', type=int, default=2, help='untimed steps of each model first')
    parser.add_argument('--config', default=TINY_CONFIG, help="config whose model dict PIC's is built from")
    add_common_arguments(parser, rounds=5, steps_per_round=2)
    args = parser.parse_args()
    if args.num_negatives % args.batch_size:
        raise ValueError(f'--num-negatives {args.num_negatives} is not a multiple of --batch-size '
                         f'{args.batch_size}, which MoCo\'s queue requires: use e.g. --num-negatives '
                         f'{args.num_negatives // args.batch_size * args.batch_size or args.batch_size}.')
    if args.negatives == 'recent' and args.num_instances < args.num_negatives + args.batch_size:
        raise ValueError(f'--num-instances {args.num_instances} is below K + B = {args.num_negatives} + '
                         f'{args.batch_size}: raise it or lower --num-negatives.')
    return args


def head_classes(args: argparse.Namespace) -> int:
    """``C``, the classes a step of PIC's head scores: ``K + B`` with recent negatives, else ``N``."""
    return args.num_negatives + args.batch_size if args.negatives == 'recent' else args.num_instances


def print_results(times: Dict[str, List[float]], products: List[float], steps: Dict[str, TrainStep],
                  args: argparse.Namespace) -> None:
    images_per_second = {name: args.batch_size / median(step_times) for name, step_times in times.items()}
    print_table(['model', 'views', 'median s/step', 'IQR', 'steps', 'images/s'],
                [[name, str(steps[name].num_views), f'{median(step_times):.3f}', spread(step_times),
                  str(len(step_times)), f'{images_per_second[name]:.1f}'] for name, step_times in times.items()])
    for pic in (name for name in PIC_NAMES if name in times):
        print()
        for other, bound, goal in RATIO_GOALS:
            ratio = images_per_second[pic] / images_per_second[other]
            verdict = 'met' if ratio >= goal else 'NOT met'
            print(f'{pic} / {other}: {ratio:.2f}x images/s (bound {bound}x, goal >= {goal}x: {verdict})')
    no_head, head = median(times['PIC, config head']), median(times['PIC']) - median(times['PIC, config head'])
    floor = median(products)
    print(f'\nthe paper head\'s floor: PIC = config head {no_head:.3f} s + paper head {head:.3f} s per step; the '
          f'head\'s three matrix products alone ({args.batch_size} x {head_classes(args)} x '
          f'{steps["PIC"].model.head.rows.dim}) take {floor:.3f} s: the head takes {head / floor:.2f}x its products')
    for other, _, goal in RATIO_GOALS:
        ratio = median(times[other]) / (no_head + floor)
        verdict = 'reachable' if ratio >= goal else 'out of reach on this machine'
        print(f'a PIC step of config head + matrix products / {other}: {ratio:.2f}x images/s (goal >= {goal}x: '
              f'{verdict})')


def main() -> None:
    args = parse_args()
    device = apply_common_arguments(args)
    print_header('Training throughput: PIC (1 view) vs mmpretrain SimCLR and MoCo v2 (2 views)', device)
    print(f'sizes:    backbone={args.backbone}, {args.image_size}x{args.image_size} images, batch '
          f'{args.batch_size}, PIC head N={args.num_instances} negatives={args.negatives} '
          f'K={args.num_negatives} (MoCo queue {args.num_negatives}), device={device}')
    print(f'timing:   synthetic images on the device (no data loader), {args.warmup_steps} warm-up steps, '
          f'{args.rounds} interleaved rounds x {args.steps_per_round} steps, order rotated', flush=True)
    steps: Dict[str, TrainStep] = {}
    for name, spec in model_specs(args).items():
        steps[name] = TrainStep(spec, args)
        for _ in range(args.warmup_steps):
            steps[name].draw_batch()
            steps[name]()
    products = matrix_products(args.batch_size, head_classes(args), steps['PIC'].model.head.rows.dim, device)
    times = interleaved_rounds({**steps, HEAD_PRODUCTS: products}, args.rounds, args.steps_per_round, device,
                               prepare={name: step.draw_batch for name, step in steps.items()})
    print()
    print_results(times, times.pop(HEAD_PRODUCTS), steps, args)


if __name__ == '__main__':
    main()
