"""What every benchmark under tools/benchmarks/ shares: the machine, the command, timers and tables.

The scripts measure ratios of times taken side by side in one run. Shared machines are noisy, so each script
runs its variants in interleaved rounds (a few steps of every variant per round, the order rotated from one
round to the next) and reports the median step time of each variant over all rounds.
"""
import argparse
import ctypes
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from pic_plugin.models.utils.row_storage import available_host_memory

GIB = 1024**3
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MALLOC_POLICIES = ('reuse', 'system')
# what set_malloc_policy did to this process, for the header
_malloc_line = 'system default'


class DistinctIndexStream:
    """Batches of instance indices read from seeded random permutations of ``[0, N)``, one per pass.

    Consecutive batches hold distinct indices (except across the seam of two passes), as an epoch-based or
    a sliding-window sampler yields them.

    Args:
        num_rows (int): ``N``.
        batch_size (int): Indices per batch.
        seed (int): Seed of the permutations.
    """

    def __init__(self, num_rows: int, batch_size: int, seed: int) -> None:
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.permutation = torch.randperm(num_rows, generator=self.generator)
        self.position = 0

    def next_batch(self) -> Tensor:
        """The next ``(B,)`` indices; a pass that cannot fill the batch is followed by a fresh one."""
        if self.position + self.batch_size > self.num_rows:
            self.permutation = torch.randperm(self.num_rows, generator=self.generator)
            self.position = 0
        batch = self.permutation[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``platform.processor()`` where there is no /proc)."""
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(device: torch.device) -> List[str]:
    """Lines describing where the benchmark runs: CPU, cores, memory, torch, threads, accelerator, load."""
    load = ', '.join(f'{value:.2f}' for value in os.getloadavg())
    available = available_host_memory()
    memory = 'unknown' if available is None else f'{available / GIB:.1f} GiB'
    lines = [
        f'date:     {time.strftime("%Y-%m-%d %H:%M:%S %Z")}',
        f'machine:  {cpu_model()}, {os.cpu_count()} cores, {memory} memory available, {platform.system()}',
        f'torch:    {torch.__version__}, {torch.get_num_threads()} intra-op threads',
        f'malloc:   {_malloc_line}',
        f'load:     {load} (1, 5, 15 min averages before the run; other work shares the machine)',
    ]
    if device.type == 'cuda':
        lines.append(f'device:   {torch.cuda.get_device_name(device)}')
    if os.getloadavg()[0] > (os.cpu_count() or 1) / 2:
        lines.append('note:     other work is running; threads that wait on each other make the times noisy '
                     '(--threads 1 is steadier on a shared machine)')
    return lines


def set_malloc_policy(policy: str) -> None:
    """Let the host's ``malloc`` keep freed blocks for reuse (``'reuse'``), or leave its defaults (``'system'``).

    glibc serves every block over 32 MiB from a fresh ``mmap`` and unmaps it when freed, so each such tensor
    (a step's ``K + B`` gathered rows, their gradient, a backbone's activations) page-faults its memory in again
    on every step: with 65,600 rows of 128 floats that costs more than the copy itself. A GPU's caching allocator
    reuses freed blocks. ``'reuse'`` does the same on the host, for every model of a benchmark alike, through
    glibc's ``mallopt``: no ``mmap`` blocks (``M_MMAP_MAX = 0``) and freed heap memory kept up to 2 GiB
    (``M_TRIM_THRESHOLD``). Where there is no glibc, nothing changes and the header says so.
    """
    global _malloc_line
    if policy == 'system':
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _malloc_line = 'system default (no glibc mallopt here: --malloc reuse changed nothing)'
        return
    if mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1):
        _malloc_line = 'freed blocks kept for reuse (glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)'


def add_common_arguments(parser: argparse.ArgumentParser, rounds: int, steps_per_round: int) -> None:
    """Add the flags every benchmark takes: rounds, steps per round, device, threads, seed and malloc policy."""
    parser.add_argument('--rounds', type=int, default=rounds, help='interleaved rounds')
    parser.add_argument('--steps-per-round', type=int, default=steps_per_round,
                        help='timed steps of every variant per round')
    parser.add_argument('--device', default='cpu', help="compute device: 'cpu' or 'cuda'")
    parser.add_argument('--threads', type=int, default=None,
                        help="torch's intra-op threads (default: torch's choice, usually the cores)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--malloc', choices=MALLOC_POLICIES, default='reuse',
                        help="host malloc: 'reuse' keeps freed blocks as a GPU's caching allocator does (for every "
                             "variant alike); 'system' leaves glibc's defaults (see set_malloc_policy)")


def apply_common_arguments(args: argparse.Namespace) -> torch.device:
    """Set the malloc policy, the threads and the seed; return the compute device."""
    set_malloc_policy(args.malloc)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return torch.device(args.device)


def print_header(title: str, device: torch.device) -> None:
    """Print the title, the exact command line and the machine."""
    print(title)
    print(f'command:  {shlex.join([sys.executable] + sys.argv)}')
    for line in machine_lines(device):
        print(line)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer sees all of it."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(step: Callable[[], None], device: torch.device) -> float:
    """Seconds one call of ``step`` takes, including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_rounds(steps: Dict[str, Callable[[], None]], rounds: int, steps_per_round: int,
                       device: torch.device,
                       prepare: Optional[Dict[str, Callable[[], None]]] = None) -> Dict[str, List[float]]:
    """Time every variant ``steps_per_round`` times per round, for ``rounds`` rounds in rotated order.

    Rotating the order (round ``r`` starts with variant ``r mod V``) spreads slow spells of a shared
    machine over all variants instead of charging them to whichever ran at the time.

    Args:
        steps (dict[str, Callable]): One step of each variant, by name.
        rounds (int): Rounds over all variants.
        steps_per_round (int): Timed steps of a variant per round.
        device (torch.device): Where the steps run (CUDA is synchronised around each step).
        prepare (dict[str, Callable], optional): Untimed work before each step of a variant (e.g. drawing
            its next batch); a variant without one has none. Defaults to None.

    Returns:
        dict[str, list[float]]: The step times of each variant, in seconds.
    """
    names = list(steps)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(steps_per_round):
                if prepare is not None and name in prepare:
                    prepare[name]()
                times[name].append(time_call(steps[name], device))
    return times


def matrix_products(batch: int, num_classes: int, dim: int, device: torch.device) -> Callable[[], None]:
    """The three matrix products of a cosine soft-max step alone, on random inputs: the logits ``(B, D) x (D, C)``
    and their two gradients, ``(C, B) x (B, D)`` and ``(B, C) x (C, D)`` (PIC Eq. 1), the step's floating-point
    bound."""
    feats, weight = torch.randn(batch, dim, device=device), torch.randn(num_classes, dim, device=device)
    grad = torch.randn(batch, num_classes, device=device)

    def products() -> None:
        feats @ weight.t(), grad.t() @ feats, grad @ weight

    return products


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """The interquartile range of ``values`` relative to their median, e.g. ``'+-3%'``."""
    if len(values) < 4:
        return 'n/a'
    quartiles = statistics.quantiles(values, n=4)
    return f'+-{50 * (quartiles[2] - quartiles[0]) / statistics.median(values):.0f}%'


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table, each column as wide as its widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return '| ' + ' | '.join(str(cell).rjust(width) for cell, width in zip(cells, widths)) + ' |'

    print(line(header))
    print('|' + '|'.join('-' * (width + 1) + ':' for width in widths) + '|')
    for row in rows:
        print(line(row))


def format_bytes(num_bytes: float) -> str:
    """``num_bytes`` in MiB or GiB, e.g. ``'17.1 MiB'``."""
    if num_bytes >= GIB:
        return f'{num_bytes / GIB:.2f} GiB'
    return f'{num_bytes / 1024**2:.1f} MiB'
