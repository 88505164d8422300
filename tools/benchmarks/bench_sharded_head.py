"""Per-rank classifier memory and step time of the sharded full classifier against the number of ranks.

    python tools/benchmarks/bench_sharded_head.py [--num-rows 1000000] [--world-sizes 1 2 4] [--batch 256]

For each world size W, W processes joined by a gloo group (CPU) each hold N / W rows of ``InstanceClsHead
(negatives='full', sharded=True)`` and run steps of forward (gathered global batch x local rows), backward and
the LazyCorrectedSGD update of their rows. The global batch is fixed, so W splits the classifier's work. Each rank
reports its classifier bytes (rows + momentum + last-update steps, plus the step's logits and soft-max) and its
median step time; a step's time is the slowest rank's. The sweep over W is repeated in rotated order and the
medians of all repeats are printed with ratios to W = 1. On a machine with fewer cores than W, ranks share cores:
the memory ratio is what the sharding guarantees, the time ratio is what this machine gives.
"""
import argparse
import os
import socket
import time
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmark_utils import format_bytes, median, print_header, print_table
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead

DIM = 128


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _rank(rank: int, world_size: int, port: int, args: argparse.Namespace, results: Dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    head = InstanceClsHead(args.num_rows, DIM, sharded=True)
    optimizer = LazyCorrectedSGD(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9,
                                                 weight_decay=1e-4))
    optimizer.register_rows(head)
    local_batch = args.batch // world_size
    generator = torch.Generator().manual_seed(rank)
    times: List[float] = []
    for step in range(args.warmup + args.steps):
        feats = torch.randn(local_batch, DIM, generator=generator, requires_grad=True)
        sample_idx = torch.randint(0, args.num_rows, (local_batch, ), generator=generator)
        dist.barrier()
        start = time.perf_counter()
        optimizer.update_params(head.loss(feats, sample_idx)['loss'])
        elapsed = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a step lasts as long as its slowest rank
        if step >= args.warmup:
            times.append(float(elapsed))
    table = head.rows
    table_bytes = sum(t.numel() * t.element_size() for t in (table.weight, table.momentum, table.last_step))
    step_bytes = 2 * args.batch * table.num_local_rows * 4  # logits and soft-max of the global batch, fp32
    if rank == 0:
        results[world_size] = dict(time=median(times), table=table_bytes, step=step_bytes)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--num-rows', type=int, default=1_000_000)
    parser.add_argument('--world-sizes', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--batch', type=int, default=256, help='global batch, split over the ranks')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5, help='timed steps per run')
    parser.add_argument('--repeats', type=int, default=2, help='sweeps over the world sizes, in rotated order')
    args = parser.parse_args()
    print_header(f'Sharded full classifier: N = {args.num_rows:,} rows x {DIM}, global batch {args.batch}, gloo on '
                 'the CPU', torch.device('cpu'))
    runs: Dict[int, List[dict]] = {w: [] for w in args.world_sizes}
    with mp.Manager() as manager:
        for repeat in range(args.repeats):
            shift = repeat % len(args.world_sizes)
            for world_size in args.world_sizes[shift:] + args.world_sizes[:shift]:
                results = manager.dict()
                mp.spawn(_rank, args=(world_size, _free_port(), args, results), nprocs=world_size, join=True)
                runs[world_size].append(dict(results[world_size]))
    base = args.world_sizes[0]
    base_time = median([r['time'] for r in runs[base]])
    base_bytes = runs[base][0]['table'] + runs[base][0]['step']
    rows = []
    for world_size in args.world_sizes:
        step_time = median([r['time'] for r in runs[world_size]])
        table, step = runs[world_size][0]['table'], runs[world_size][0]['step']
        rows.append([str(world_size), format_bytes(table), format_bytes(step),
                     f'{(table + step) / base_bytes:.3f}', f'{1 / world_size:.3f}', f'{step_time * 1e3:.1f} ms',
                     f'{step_time / base_time:.2f}'])
    print_table(['ranks', 'rows/rank', 'logits/rank', f'memory / W={base}', '1/W', 'step', f'time / W={base}'],
                rows)


if __name__ == '__main__':
    main()
