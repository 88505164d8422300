"""Time one training step of PIC's instance classifier as the number of instances N grows.

    python tools/benchmarks/bench_head_step.py
    python tools/benchmarks/bench_head_step.py --rows 100000 1000000 --dense-rows 10000 100000 --rounds 3

One step is what the classifier adds to a training iteration: a tiny ``nn.Linear`` turns a fixed input into the
``(B, D)`` features (so the model's own step is trivial), ``InstanceClsHead.loss`` gathers the rows of the step
from its ``LazySGDRows``, brings them forward (PIC Eq. 3), computes the cosine logits and the cross-entropy
(PIC Eq. 1), then ``LazyCorrectedSGD.update_params`` runs the backward pass, the SGD step of the Linear and of
the gathered rows (``rows.step``, PIC Eq. 2) and writes the rows back. Every step has its own learning rate (a
cosine), so the correction multiplies genuinely different transitions.

Bounds: for the largest N, the step is timed interleaved with its three matrix products alone at its own shapes
and with a copy of its ``(C, D)`` rows (the machine's memory stream), and the ratio of the step to the products
is printed against the goal of 1.5, with the phases' share beside it (the logits, loss and backward against the
products; the rest: classes, row traffic, correction, SGD update). The bytes that every other operation of a
step reads and writes are counted (``OperationBytes``); at the copy's rate they give the time those operations
need at least, so the output says whether the goal is within reach of them and how far they are from their own
bound.
Host memory: see ``--malloc`` (``benchmark_utils.set_malloc_policy``).

Two modes of the same head are timed:

* sampled + lazy (``negatives='recent'``, PIC Sec. 2.3): the softmax runs over the batch and the ``K`` most
  recent positives, so a step touches ``K + B`` rows whatever ``N`` is. Goal: ``t(1e7) / t(1e5) <= 1.10``.
* dense baseline (``negatives='full'``): all ``N`` rows every step; its cost grows linearly with ``N``.

Access pattern: batch indices are read from a stream of seeded random permutations of ``[0, N)``, so
consecutive batches are distinct and the recent queue holds ``K`` distinct rows. Before timing, every head
runs ``K / B`` steps to fill its queue plus ``--extra-warmup-steps`` more, so the gathered rows have varied
``last_step`` and need a real correction.

Interleaving: with ``--schedule interleaved`` all heads of a mode live at once and every round times
``--steps-per-round`` steps of each, the order rotated per round. With ``--schedule sweeps`` (for machines
without memory for every table at once: 1e7 rows x 128 x fp32 x (weight + momentum) = 10.2 GB) one head
lives at a time and the sweep over N is repeated ``--sweeps`` times. ``auto`` picks interleaved when the
tables fit in 80% of the available memory. The output says which was used.

Bytes on the accelerator per step: the tensors a step moves to or creates on the compute device, read from
the shapes actually used (a wrapper around ``RowStorage.gather`` and ``RowStorage.write`` and the gathered rows'
gradient): gathered rows, their momentum and last step; the ``(B, C)`` logits and their gradient; the rows'
gradient; the updated rows written back. Intermediates of the same shapes (normalised copies, the float64
correction) scale alike and are not added. The same instrumented steps time the phases of a step, to show
where any growth with N comes from.
"""
import argparse
import gc
import math
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmark_utils import (DistinctIndexStream, add_common_arguments, apply_common_arguments, format_bytes,
                             interleaved_rounds, matrix_products, median, print_header, print_table, spread,
                             synchronize)
from pic_plugin.engine.optimizers.lazy_corrected_sgd import LazyCorrectedSGD
from pic_plugin.models.heads.instance_cls_head import InstanceClsHead
from pic_plugin.models.utils.row_storage import available_host_memory

FLAT_GOAL = 1.10
MATMUL_GOAL = 1.5  # the head step against its three matrix products
aten = torch.ops.aten
MATRIX_PRODUCTS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
# operations that read (gathers) or write (puts) only the indexed rows of their first tensor
GATHERS = {aten.index_select, aten.index, aten.gather, aten.masked_select}
PUTS = {aten.index_copy_, aten.index_put_, aten._index_put_impl_, aten.index_add_, aten.scatter_, aten.scatter_add_}
# what an operation writes when its schema declares more (the fused SGD kernel may unscale its gradients, but
# writes only the parameters and momentum without a grad_scale)
WRITTEN_ARGUMENTS = {aten._fused_sgd_: ('self', 'momentum_buffer_list')}
PHASES = ('recent classes', 'gather', 'correct (Eq. 3)', 'logits + loss', 'backward',
          'SGD update (Eq. 2)', 'write back')


class HeadStep:
    """An ``InstanceClsHead`` fed by a tiny Linear and trained by ``LazyCorrectedSGD``: one step per call.

    Args:
        num_rows (int): Instances ``N`` (rows of the table).
        negatives (str): ``'recent'`` or ``'full'``.
        args (argparse.Namespace): The command line (dim, batch size, K, placement, device, seed).
    """

    def __init__(self, num_rows: int, negatives: str, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.base_lr = 0.03
        self.features = nn.Linear(args.dim, args.dim).to(self.device)
        # .to() moves the head's buffers; the FIFO stays on the host and the rows place themselves (RowStorage.place_on)
        self.head = InstanceClsHead(num_classes=num_rows, in_channels=args.dim, negatives=negatives,
                                    num_negatives=args.num_negatives, placement=args.placement).to(self.device)
        self.optim = LazyCorrectedSGD(torch.optim.SGD(self.features.parameters(), lr=self.base_lr,
                                                      momentum=0.9, weight_decay=1e-4))
        self.optim.register_rows(self.head)
        self.inputs = torch.randn(args.batch_size, args.dim, device=self.device)  # (B, D)
        self.stream = DistinctIndexStream(num_rows, args.batch_size, args.seed)
        self.indices = self.stream.next_batch()  # (B,) on the host, as InstanceClassification gives them

    def draw_indices(self) -> None:
        """Draw the indices of the next step's batch (untimed: a new permutation costs O(N) once a pass)."""
        self.indices = self.stream.next_batch()

    def _set_learning_rate(self) -> None:
        """A cosine over 100k steps: every step gets its own lr, so its transition (Eq. 3) differs."""
        lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * self.head.rows.num_steps / 100_000))
        for group in self.optim.optimizer.param_groups:
            group['lr'] = lr

    def loss(self) -> Tensor:
        """The classifier loss of the current batch (the forward half of a step)."""
        self._set_learning_rate()
        return self.head.loss(self.features(self.inputs), self.indices)['loss']

    def __call__(self) -> None:
        """One step on the current batch: forward, backward and both SGD updates."""
        self.optim.update_params(self.loss())


class StepProfile(NamedTuple):
    """What the instrumented steps of one head measured, per step.

    Attributes:
        phase_milliseconds (dict[str, float]): Mean milliseconds of each phase (``PHASES``).
        device_bytes (dict[str, float]): Mean bytes of each group of tensors on the compute device.
        classes (float): Mean number ``C`` of rows (classes) in a step's softmax.
        steps (int): Instrumented steps.
    """

    phase_milliseconds: Dict[str, float]
    device_bytes: Dict[str, float]
    classes: float
    steps: int


class StepInstrument:
    """Times the phases of a step and counts the bytes it moves to or creates on the compute device."""

    def __init__(self, bench: HeadStep) -> None:
        self.bench = bench
        self.seconds: Dict[str, float] = {phase: 0.0 for phase in PHASES}
        self.device_bytes: Dict[str, int] = {'gathered': 0, 'logits + grad': 0, 'row grads': 0,
                                             'written back': 0}
        self.classes_per_step: List[int] = []
        self.steps = 0
        self._running: List[str] = []  # the timed phases now running, outermost first

    def _timed(self, phase: str, function: Callable) -> Callable:
        """``function`` timed as ``phase``; a phase timed inside another is subtracted from the one around it."""

        def wrapper(*args, **kwargs):
            synchronize(self.bench.device)
            start = time.perf_counter()
            self._running.append(phase)
            try:
                result = function(*args, **kwargs)
            finally:
                self._running.pop()
            synchronize(self.bench.device)
            elapsed = time.perf_counter() - start
            self.seconds[phase] += elapsed
            if self._running:
                self.seconds[self._running[-1]] -= elapsed
            return result

        return wrapper

    @contextmanager
    def installed(self) -> Iterator['StepInstrument']:
        """Wrap the negative selection's and the rows' methods for the duration of the block."""
        head, table = self.bench.head, self.bench.head.rows
        gather, write = table.gather, table.write

        def counting_gather(*args, **kwargs) -> Tensor:
            rows = gather(*args, **kwargs)
            self.device_bytes['gathered'] += rows.numel() * rows.element_size()
            return rows

        def counting_write(local_indices: Tensor, **rows: Tensor) -> None:
            self.device_bytes['written back'] += sum(r.numel() * r.element_size() for r in rows.values())
            write(local_indices, **rows)

        patches = [(head.negatives, 'forward', self._timed('recent classes', head.negatives.forward)),
                   (table, 'gather', self._timed('gather', counting_gather)),
                   (table, 'bring_forward', self._timed('correct (Eq. 3)', table.bring_forward)),
                   (table, 'write', self._timed('write back', counting_write))]
        for owner, name, wrapper in patches:
            setattr(owner, name, wrapper)
        try:
            yield self
        finally:
            for owner, name, _ in patches:
                delattr(owner, name)

    def step(self) -> None:
        """Draw a batch and run one step, as ``HeadStep.__call__``, with each phase timed."""
        bench = self.bench
        bench.draw_indices()
        loss = self._timed('logits + loss', bench.loss)()
        pending = bench.head.rows.handed_out
        self._timed('backward', bench.optim.backward)(loss)
        classes = pending.weight.shape[0]  # C of the (C, D) rows
        logits_bytes = bench.inputs.shape[0] * classes * pending.weight.element_size()  # (B, C)
        self.device_bytes['logits + grad'] += 2 * logits_bytes
        self.device_bytes['row grads'] += pending.weight.grad.numel() * pending.weight.grad.element_size()
        self.classes_per_step.append(classes)
        self._timed('SGD update (Eq. 2)', bench.optim.step)()
        bench.optim.zero_grad()
        self.steps += 1

    def profile(self) -> StepProfile:
        """The means per step (each phase without the phases timed inside it)."""
        milliseconds = {phase: 1000 * seconds / self.steps for phase, seconds in self.seconds.items()}
        return StepProfile(milliseconds, {name: total / self.steps for name, total in self.device_bytes.items()},
                           sum(self.classes_per_step) / self.steps, self.steps)


class OperationBytes(TorchDispatchMode):
    """Counts the bytes that every operation except the matrix products reads and writes, under this mode.

    An operation reads its tensor arguments and writes its outputs and the arguments its schema marks as written,
    each tensor counted once; views move nothing; a gather reads and writes its output's size, a put reads and
    writes its source's size (``GATHERS``, ``PUTS``). A real kernel may keep a small operand in cache, so this is
    what the operations stream at most from memory, and at least what a memory-bound one must.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if func.is_view or packet in MATRIX_PRODUCTS:
            return out
        if packet in GATHERS:
            read, written = tensors_of(args[1:]) + tensors_of(out), tensors_of(out)
        elif packet in PUTS:
            read = written = tensors_of(args[1:])
        else:
            read, written = tensors_of((args, kwargs)), written_arguments(func, args, kwargs) + tensors_of(out)
        self.bytes += distinct_bytes(read) + distinct_bytes(written)
        return out


def written_arguments(func, args: tuple, kwargs: dict) -> List[Tensor]:
    """The tensor arguments that ``func`` writes: those its schema marks as written, or ``WRITTEN_ARGUMENTS``."""
    arguments = func._schema.arguments
    names = WRITTEN_ARGUMENTS.get(func.overloadpacket) or [
        argument.name for argument in arguments if argument.alias_info is not None and argument.alias_info.is_write]
    named = dict(zip((argument.name for argument in arguments), args), **kwargs)
    return tensors_of([named.get(name) for name in names])


def tensors_of(tree) -> List[Tensor]:
    """The tensors among the leaves of nested lists, tuples and dicts."""
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, Tensor)]


def distinct_bytes(tensors: Sequence[Tensor]) -> int:
    """The bytes of ``tensors``, each tensor (the same memory and size) counted once."""
    return sum({(t.data_ptr(), t.nbytes): t.nbytes for t in tensors}.values())


def step_operation_bytes(bench: HeadStep) -> int:
    """Bytes the operations of one step other than its matrix products read and write (``OperationBytes``)."""
    bench.draw_indices()
    with OperationBytes() as counter:
        bench()
    return counter.bytes


def stream_copy(bench: HeadStep) -> Tuple[Callable[[], None], int]:
    """A copy of a ``(C, D)`` float32 tensor, the size of the step's rows, and the bytes it reads and writes."""
    _, classes, dim = step_shape(bench)
    source = torch.randn(classes, dim, device=bench.device)
    target = torch.empty_like(source)
    return (lambda: target.copy_(source)), 2 * source.nbytes


def table_bytes(num_rows: int, dim: int) -> int:
    """Host or device memory of a table: fp32 weight and momentum, int64 last step."""
    return num_rows * (2 * dim * 4 + 8)


def step_bytes_estimate(num_rows: int, negatives: str, args: argparse.Namespace) -> int:
    """A generous bound of a step's temporaries (copies, float64 correction, logits, softmax, grads)."""
    classes = num_rows if negatives == 'full' else args.num_negatives + args.batch_size
    return classes * args.dim * 64 + args.batch_size * classes * 16


def choose_schedule(row_counts: Sequence[int], negatives: str, args: argparse.Namespace) -> str:
    """``--schedule``; for ``auto``, interleaved when every table fits in 80% of the available memory."""
    if args.schedule != 'auto':
        return args.schedule
    needed = sum(table_bytes(rows, args.dim) for rows in row_counts)
    needed += max(step_bytes_estimate(rows, negatives, args) for rows in row_counts)
    available = available_host_memory()
    return 'interleaved' if available is not None and needed < 0.8 * available else 'sweeps'


class ModeResult:
    """Step times, bytes and phases of one mode (sampled or dense) for every N."""

    def __init__(self) -> None:
        self.times: Dict[int, List[float]] = {}
        self.profiles: Dict[int, StepProfile] = {}
        self.build_seconds: Dict[int, float] = {}


def build_and_warm_up(num_rows: int, negatives: str, warmup_steps: int,
                      args: argparse.Namespace) -> HeadStep:
    """A new head of ``num_rows`` rows after ``warmup_steps`` untimed steps."""
    bench = HeadStep(num_rows, negatives, args)
    for _ in range(warmup_steps):
        bench.draw_indices()
        bench()
    return bench


def instrument(bench: HeadStep, steps: int) -> StepProfile:
    """Phases and bytes of ``steps`` more steps of ``bench``."""
    probe = StepInstrument(bench)
    with probe.installed():
        for _ in range(steps):
            probe.step()
    return probe.profile()


def measure_mode(row_counts: Sequence[int], negatives: str, warmup_steps: int, steps_per_round: int,
                 profile_steps: int, schedule: str, args: argparse.Namespace,
                 on_bench: Optional[Callable[[int, 'HeadStep'], None]] = None) -> ModeResult:
    """Time every N of one mode with the chosen schedule, then instrument a few more steps of each; hand each
    warmed-up head to ``on_bench`` before it is freed."""
    result = ModeResult()
    device = torch.device(args.device)

    def build(num_rows: int) -> HeadStep:
        start = time.perf_counter()
        bench = build_and_warm_up(num_rows, negatives, warmup_steps, args)
        result.build_seconds[num_rows] = time.perf_counter() - start
        return bench

    if schedule == 'interleaved':
        benches = {rows: build(rows) for rows in row_counts}
        times = interleaved_rounds({str(rows): bench for rows, bench in benches.items()}, args.rounds,
                                   steps_per_round, device,
                                   prepare={str(rows): bench.draw_indices for rows, bench in benches.items()})
        result.times = {rows: times[str(rows)] for rows in row_counts}
        result.profiles = {rows: instrument(bench, profile_steps) for rows, bench in benches.items()}
        if on_bench is not None:
            for rows, bench in benches.items():
                on_bench(rows, bench)
        del benches
    else:
        result.times = {rows: [] for rows in row_counts}
        for sweep in range(args.sweeps):
            shift = sweep % len(row_counts)
            for rows in list(row_counts[shift:]) + list(row_counts[:shift]):
                bench = build(rows)
                times = interleaved_rounds({'only': bench}, args.rounds, steps_per_round, device,
                                           prepare={'only': bench.draw_indices})
                result.times[rows].extend(times['only'])
                if rows not in result.profiles:
                    result.profiles[rows] = instrument(bench, profile_steps)
                    if on_bench is not None:
                        on_bench(rows, bench)
                del bench
                gc.collect()
    gc.collect()
    return result


def step_shape(bench: HeadStep) -> Tuple[int, int, int]:
    """``(B, C, D)`` of ``bench``'s steps: batch, classes (``C = K + B``) and row length."""
    batch = bench.inputs.shape[0]
    return batch, bench.head.negatives.num_negatives + batch, bench.head.rows.dim


def step_matrix_products(bench: HeadStep) -> Callable[[], None]:
    """The step's three matrix products alone, at the shapes of ``bench``'s steps."""
    return matrix_products(*step_shape(bench), bench.device)


def print_bounds(num_rows: int, bench: HeadStep, args: argparse.Namespace) -> None:
    """Time the head step beside its matrix products and a memory stream (interleaved) and print how far it and
    its phases are from them."""
    copy, copy_bytes = stream_copy(bench)
    times = interleaved_rounds({'head step': bench, 'matrix products': step_matrix_products(bench),
                                'copy of (C, D) rows': copy}, args.rounds, args.steps_per_round, bench.device,
                               prepare={'head step': bench.draw_indices})
    seconds = {name: median(values) for name, values in times.items()}
    products = seconds['matrix products']
    ratio = seconds['head step'] / products
    verdict = 'met' if ratio <= MATMUL_GOAL else 'NOT met'
    print(f'\nN={count_label(num_rows)}: head step against its matrix products and a memory stream (interleaved, '
          f'{args.rounds} rounds x {args.steps_per_round} steps; median ms)')
    print_table(['operation', 'median ms', 'IQR'],
                [[name, f'{1000 * seconds[name]:.1f}', spread(times[name])] for name in times])
    print(f'head step / matrix products = {ratio:.2f}: goal <= {MATMUL_GOAL} {verdict}')
    profile = instrument(bench, args.profile_steps).phase_milliseconds
    compute = profile['logits + loss'] + profile['backward']
    print(f'phases (instrumented, mean of {args.profile_steps} steps): logits + loss + backward {compute:.2f} ms = '
          f'{compute / (1000 * products):.2f}x the products; the rest '
          f'{sum(profile.values()) - compute:.2f} ms (' + ', '.join(
              f'{phase} {ms:.2f}' for phase, ms in profile.items() if phase not in ('logits + loss', 'backward'))
          + ')')
    moved, rate = step_operation_bytes(bench), copy_bytes / seconds['copy of (C, D) rows']
    stream, beyond = moved / rate, seconds['head step'] - products
    bound = (products + stream) / products
    reach = 'within' if bound <= MATMUL_GOAL else 'out of'
    print(f'memory bound: the operations besides the products read and write {format_bytes(moved)} per step; at '
          f'the copy\'s {rate / 1e9:.1f} GB/s that is {1000 * stream:.1f} ms, so products + stream = '
          f'{bound:.2f}x the products: the goal is {reach} reach of these operations; '
          f'the step spends {1000 * beyond:.1f} ms beyond its products = {beyond / stream:.2f}x that stream time')


def count_label(count: int) -> str:
    """``100000 -> '1e5'`` for powers of ten, the plain number otherwise."""
    exponent = round(math.log10(count))
    return f'1e{exponent}' if 10**exponent == count else str(count)


def print_mode(title: str, result: ModeResult, args: argparse.Namespace) -> float:
    """Print a mode's table; return ``t(largest N) / t(smallest N)``."""
    row_counts = sorted(result.times)
    base = median(result.times[row_counts[0]])
    rows = []
    for num_rows in row_counts:
        step_time, profile = median(result.times[num_rows]), result.profiles[num_rows]
        rows.append([count_label(num_rows), format_bytes(table_bytes(num_rows, args.dim)),
                     f'{profile.classes:.0f}', f'{1000 * step_time:.1f}', spread(result.times[num_rows]),
                     str(len(result.times[num_rows])), f'{step_time / base:.3f}',
                     format_bytes(sum(profile.device_bytes.values()))])
    print(f'\n{title}')
    print_table(['N', 'table (w + m)', 'classes/step C', 'median ms/step', 'IQR', 'steps',
                 f't(N)/t({count_label(row_counts[0])})', 'bytes on accelerator/step'], rows)
    return median(result.times[row_counts[-1]]) / base


def print_breakdowns(title: str, result: ModeResult) -> None:
    """Per N: the bytes a step moves or creates on the device, and the milliseconds of each phase."""
    row_counts = sorted(result.times)
    header = ['N'] + [count_label(rows) for rows in row_counts]
    profiles = [result.profiles[rows] for rows in row_counts]
    print(f'\n{title}: bytes on the accelerator per step, by tensor')
    print_table(header, [[name] + [format_bytes(profile.device_bytes[name]) for profile in profiles]
                         for name in profiles[0].device_bytes])
    print(f'\n{title}: milliseconds per step, by phase (mean of {profiles[0].steps} instrumented steps; the '
          'timers synchronise, so the sum is a little above the median)')
    print_table(header, [[phase] + [f'{profile.phase_milliseconds[phase]:.2f}' for profile in profiles]
                         for phase in PHASES])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', type=int, nargs='+', default=[100_000, 1_000_000, 10_000_000],
                        help='N of the sampled + lazy mode')
    parser.add_argument('--dense-rows', type=int, nargs='*', default=[10_000, 100_000, 1_000_000],
                        help='N of the dense full-softmax baseline (none: skip it)')
    parser.add_argument('--dim', type=int, default=128, help='D, the length of a row')
    parser.add_argument('--batch-size', type=int, default=256, help='B')
    parser.add_argument('--num-negatives', type=int, default=16384, help='K, the recent negatives')
    add_common_arguments(parser, rounds=7, steps_per_round=4)
    parser.add_argument('--dense-steps-per-round', type=int, default=1, help='timed dense steps per round')
    parser.add_argument('--extra-warmup-steps', type=int, default=20,
                        help='warm-up steps after the K / B that fill the recent queue')
    parser.add_argument('--profile-steps', type=int, default=5, help='instrumented sampled steps per N')
    parser.add_argument('--schedule', choices=['auto', 'interleaved', 'sweeps'], default='auto')
    parser.add_argument('--sweeps', type=int, default=3, help='repetitions of the sweep over N (sweeps)')
    parser.add_argument('--placement', choices=['host', 'device'], default='host',
                        help='where the table lives (host memory, or the compute device)')
    args = parser.parse_args()
    if min(args.rows) < args.num_negatives + args.batch_size:
        raise ValueError(f'--rows {min(args.rows)} is smaller than K + B = {args.num_negatives} + '
                         f'{args.batch_size}: the recent queue could not hold distinct rows. Raise --rows or '
                         'lower --num-negatives.')
    if args.dense_rows and min(args.dense_rows) < args.batch_size:
        raise ValueError(f'--dense-rows {min(args.dense_rows)} is smaller than the batch size '
                         f'{args.batch_size}: a batch needs distinct rows. Raise --dense-rows.')
    return args


def main() -> None:
    args = parse_args()
    device = apply_common_arguments(args)
    print_header('PIC head step: forward (cosine logits + CE), backward, LazyCorrectedSGD update', device)
    print(f'sizes:    D={args.dim}, B={args.batch_size}, K={args.num_negatives}, placement={args.placement}, '
          f'device={device}')

    warmup = math.ceil(args.num_negatives / args.batch_size) + args.extra_warmup_steps
    schedule = choose_schedule(args.rows, 'recent', args)
    print(f'sampled + lazy: {schedule} schedule, {warmup} warm-up steps per head (queue full after '
          f'{math.ceil(args.num_negatives / args.batch_size)}), {args.rounds} rounds x {args.steps_per_round} '
          f'steps' + (f' per N, whole sweep repeated {args.sweeps} times' if schedule == 'sweeps' else
                      ' of every N per round, order rotated'), flush=True)

    def bounds_of_the_largest(num_rows: int, bench: HeadStep) -> None:
        if num_rows == max(args.rows):
            print_bounds(num_rows, bench, args)

    sampled = measure_mode(args.rows, 'recent', warmup, args.steps_per_round, args.profile_steps, schedule, args,
                           on_bench=bounds_of_the_largest)
    sampled_ratio = print_mode(f'sampled + lazy (negatives=recent, K={args.num_negatives})', sampled, args)
    verdict = 'met' if sampled_ratio <= FLAT_GOAL else 'NOT met'
    print(f't({count_label(max(args.rows))}) / t({count_label(min(args.rows))}) = {sampled_ratio:.3f}: '
          f'goal <= {FLAT_GOAL} {verdict}')
    print_breakdowns('sampled + lazy', sampled)
    print('build + warm-up seconds: ' + ', '.join(f'N={count_label(rows)}: {seconds:.0f}'
                                                  for rows, seconds in sampled.build_seconds.items()))

    if args.dense_rows:
        dense_schedule = choose_schedule(args.dense_rows, 'full', args)
        print(f'\ndense baseline: {dense_schedule} schedule, 1 warm-up step per head, {args.rounds} rounds x '
              f'{args.dense_steps_per_round} steps', flush=True)
        dense = measure_mode(args.dense_rows, 'full', 1, args.dense_steps_per_round, 1, dense_schedule, args)
        dense_ratio = print_mode('dense baseline (negatives=full): grows linearly with N', dense, args)
        print(f't({count_label(max(args.dense_rows))}) / t({count_label(min(args.dense_rows))}) = '
              f'{dense_ratio:.1f}')


if __name__ == '__main__':
    main()
