"""Time the per-epoch hard-class search of the full classifier against the matrix products it cannot avoid.

    python tools/benchmarks/bench_hard_classes.py
    python tools/benchmarks/bench_hard_classes.py --rows 100000 --dim 128 --k 100 --rounds 3

``top_k_similar_rows`` finds, for each of ``N`` random rows, the ``k`` rows of highest cosine similarity
(the hard classes of the paper's Eq. 2-3). Any exact method must form all ``N x N`` dot products of length
``D``; the bound timed beside it is exactly those products, done by ``torch.mm`` in the same
``chunk_size x key_block_size`` blocks into the same buffer, and nothing else. The goal is
``t(top_k_similar_rows) / t(matrix products) <= 1.5``. Both run in interleaved rounds (the order rotated per
round) on the same machine, and the median of each is reported. Before timing, the top-k of the first
``--check-rows`` rows is compared with a brute-force ``torch.topk`` over their full rows of similarities.
"""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark_utils import (add_common_arguments, apply_common_arguments, interleaved_rounds, median, print_header,
                             print_table, spread)
from pic_plugin.models.utils.hard_classes import DEFAULT_BLOCKS, GROUP_SIZE, top_k_similar_rows

RATIO_GOAL = 1.5


def matrix_products(rows: Tensor, chunk_size: int, block_width: int, buffer: Tensor) -> None:
    """Every block of ``rows @ rows.T`` that ``top_k_similar_rows`` scores, and nothing more."""
    num_rows = rows.shape[0]
    for start in range(0, num_rows, chunk_size):
        queries = rows[start:start + chunk_size]  # (c, D)
        for key_start in range(0, num_rows, block_width):
            keys = rows[key_start:key_start + block_width]  # (b, D)
            block = buffer[:queries.shape[0] * keys.shape[0]].view(queries.shape[0], keys.shape[0])
            torch.mm(queries, keys.t(), out=block)  # (c, D) x (D, b) -> (c, b)


def check_against_brute_force(rows: Tensor, k: int, num_checked: int) -> str:
    """Compare the top-k of the first rows with ``torch.topk`` over their full rows of similarities."""
    unit = F.normalize(rows, dim=1)
    similarities = unit[:num_checked] @ unit.t()  # (m, D) x (D, N) -> (m, N)
    similarities[torch.arange(num_checked), torch.arange(num_checked)] = -math.inf
    expected = similarities.topk(k, dim=1)
    found = top_k_similar_rows(rows, k)
    values_equal = torch.allclose(found.values[:num_checked], expected.values, atol=1e-5)
    same_indices = (found.indices[:num_checked] == expected.indices).float().mean().item()
    return (f'check:    top-{k} of the first {num_checked} rows against brute force: values '
            f'{"equal" if values_equal else "DIFFER"}, {100 * same_indices:.2f}% of indices identical')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', type=int, default=100_000, help='N, rows of the table')
    parser.add_argument('--dim', type=int, default=128, help='D, length of a row')
    parser.add_argument('--k', type=int, default=100, help='similar rows per row')
    parser.add_argument('--chunk-size', type=int, default=None, help='query rows per block (default per device)')
    parser.add_argument('--key-block-size', type=int, default=None,
                        help='key rows per block (default per device)')
    parser.add_argument('--check-rows', type=int, default=256, help='rows checked against brute force')
    add_common_arguments(parser, rounds=3, steps_per_round=1)
    args = parser.parse_args()
    device = apply_common_arguments(args)
    default_chunk, default_block = DEFAULT_BLOCKS.get(device.type, DEFAULT_BLOCKS['cpu'])
    chunk_size = args.chunk_size or default_chunk
    block_width = -(-(args.key_block_size or default_block) // GROUP_SIZE) * GROUP_SIZE

    print_header('Hard classes (full classifier Eq. 2-3): top-k cosine search over all rows', device)
    print(f'sizes:    N = {args.rows}, D = {args.dim}, k = {args.k}, blocks of {chunk_size} query rows x '
          f'{block_width} key rows, float32 on {device}')
    rows = torch.randn(args.rows, args.dim, device=device)
    print(check_against_brute_force(rows, args.k, min(args.check_rows, args.rows)))

    unit_rows = F.normalize(rows, dim=1)
    buffer = unit_rows.new_empty(chunk_size * block_width)
    steps = {
        'top_k_similar_rows': lambda: top_k_similar_rows(rows, args.k, chunk_size, block_width),
        'matrix products (bound)': lambda: matrix_products(unit_rows, chunk_size, block_width, buffer),
    }
    times = interleaved_rounds(steps, args.rounds, args.steps_per_round, device)
    bound = median(times['matrix products (bound)'])
    flops = 2 * args.rows**2 * args.dim
    table = [[name, f'{median(seconds):.2f}', spread(seconds), str(len(seconds)),
              f'{flops / median(seconds) / 1e9:.1f}', f'{median(seconds) / bound:.3f}']
             for name, seconds in times.items()]
    print_table(['variant', 'median s', 'IQR', 'runs', 'GFLOP/s of the products', 'x bound'], table)
    ratio = median(times['top_k_similar_rows']) / bound
    verdict = 'met' if ratio <= RATIO_GOAL else 'NOT met'
    print(f't(top_k_similar_rows) / t(matrix products) = {ratio:.3f}: goal <= {RATIO_GOAL} {verdict}')


if __name__ == '__main__':
    main()
