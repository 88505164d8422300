"""Compare pre-training configs over seeds at a budget of epochs (equal, or per run), by their weighted kNN.

    python tools/analysis_tools/compare_methods.py \\
        --run pic configs/pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py \\
        --run npid configs/npid/npid_resnet18-w16_1xb128-coslr-20e_digits.py \\
        --seeds 0 1 2 --epochs 10 --val-interval 2 --out-dir work_dirs/compare/pic_vs_npid

    # one config and a variant of it (KEY=VALUE as in --cfg-options; mmpretrain's ResNet default is True)
    PIC=configs/pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py
    python tools/analysis_tools/compare_methods.py \\
        --run zero-init $PIC --run no-zero-init $PIC model.backbone.zero_init_residual=False \\
        --seeds 0 1 2 --epochs 8 --val-interval 2 --out-dir work_dirs/compare/zero_init \\
        --cfg-options train_dataloader.num_workers=0 val_dataloader.num_workers=0

    # an equal wall-clock comparison (see below): a multi-crop epoch costs more than a single-crop one, so the
    # single crop trains more epochs, its own epochs=N (N = 14 as an example, picked from the `train s` of a first
    # pass of both at --epochs 8, whose multi-crop trainings --reuse keeps); the multi-crop run trains --epochs
    python tools/analysis_tools/compare_methods.py \\
        --run single-crop $PIC epochs=14 \\
        --run multi-crop configs/pic/pic_resnet18-w16_1xb128-multicrop-coslr-20e_digits.py \\
        --seeds 0 1 2 --epochs 8 --val-interval 2 --out-dir work_dirs/compare/multicrop_wall_clock --reuse

    # another CustomDataset-layout folder (ROOT/train/CLASS/*.png, ROOT/test/CLASS/*.png), continuing an
    # interrupted comparison with the runs that finished
    python tools/analysis_tools/compare_methods.py --run pic $PIC --seeds 0 1 2 --epochs 10 \\
        --data-root /path/to/folder --out-dir work_dirs/compare/my_folder --reuse

Every ``--run NAME CONFIG [KEY=VALUE ...]`` is trained once per seed by ``tools/train.py`` in a subprocess, in
its own work dir ``OUT_DIR/runs/NAME/seed_SEED`` (the subprocess's output goes to ``train.log`` there), with
``--cfg-options`` made of, in this order: the ``--data-root`` keys, the shared ``--cfg-options``, the run's own
KEY=VALUE pairs, and the budget:

* ``randomness.seed`` = the seed; ``train_cfg.max_epochs`` = the run's epochs: the reserved item ``epochs=N``
  among its KEY=VALUE pairs (not passed on as an override), else ``--epochs``; ``train_cfg.val_interval`` =
  ``--val-interval`` (mmengine also validates after the last epoch); one checkpoint, after the last epoch;
* ``param_scheduler``: the configs compute their schedule from ``max_epochs`` when they are loaded (the digits
  configs: warm-up over max_epochs / 40 epochs, then cosine to max_epochs), so overriding
  ``train_cfg.max_epochs`` alone would leave it at the old length. Each scheduler's ``begin``, ``end`` and
  ``T_max`` are scaled by the run's epochs / ``max_epochs`` (the config's, after the options), which is exactly
  the schedule the config gives with ``max_epochs`` = the run's epochs; ``milestones`` and ``step_size`` are
  scaled and rounded to whole epochs. Iteration-based schedulers (``by_epoch=False``) are refused.

A short budget shortens the warm-up with the rest: mmengine's ``LinearLR`` rounds it down to whole iterations and
needs at least 2 (with 1 the lr stays at ``start_factor`` times its value for the whole run; with 0 the run fails
with "end should be larger than begin"). The digits configs (12 iterations per epoch) need 7 epochs or more.
The peak lr that each run logged is printed beside its result to show it.

The kNN top-1 of every validation is read from ``WORK_DIR/TIMESTAMP/vis_data/scalars.json`` (mmengine's
``LocalVisBackend``; the key ``knn/top1`` of ``WeightedKNN``). The wall time of every training (the whole
``tools/train.py`` subprocess: its start-up, the epochs and the kNN validations) is written to
``WORK_DIR/train_seconds.json``. The tool prints and writes ``OUT_DIR/table.md`` (rows: runs; columns: the
seeds, the run's epochs, ``train s`` = the mean training wall time over the seeds, the top-1 after every epoch
that some run evaluates, ``—`` where a run does not, and ``final`` = the top-1 after the run's last epoch; cells:
mean ± sample std over the seeds; ``final range``: the lowest and the highest seed's final top-1, how far one
run may land from the mean; ``vs first``: the final mean minus the first run's, and that difference over its
standard error, to tell a default's rival from noise), ``OUT_DIR/results.json`` (every value of every seed,
the means and stds) and ``OUT_DIR/knn_top1.png`` (top-1 against epoch, one line per run with a ± std band). A
reused run trained before the wall time was recorded has no ``train_seconds.json``: its ``train s`` is ``—``
(``null`` in the JSON).

The budget is epochs, not wall clock: every config's schedule is defined in epochs, and stopping a run at a time
would cut its schedule short. An equal wall-clock comparison gives the cheaper run more epochs: train every run
at ``--epochs`` first, read the ``train s`` column, then run again with ``--reuse`` and ``epochs=N`` on the run
that was faster, with N chosen so that its ``train s`` comes out about the other's; the table shows both the
epochs and the seconds. The seconds are those of a shared, noisy machine: a guide to pick N, not a measurement.
Runs are single-process: the full classifier's digits config shards its rows over two processes of batch 64
(``tools/dist_train.sh``); as a run here it takes ``model.head.sharded=False train_dataloader.batch_size=128``
(the same classifier and total batch, one process).
"""
import argparse
import json
import math
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mmengine.config import Config, DictAction

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / 'tools' / 'train.py'
METRIC = 'knn/top1'  # WeightedKNN's default_prefix 'knn' and its top-1 accuracy, in percent
BUDGET_KEYS = ('randomness.seed', 'train_cfg.max_epochs', 'train_cfg.val_interval')
EPOCHS_ITEM = 'epochs'  # the reserved KEY of a run's own epochs, ``epochs=N``
SCALED_SCHEDULER_KEYS = ('begin', 'end', 'T_max')
WHOLE_EPOCH_SCHEDULER_KEYS = ('milestones', 'step_size')
SECONDS_FILE = 'train_seconds.json'
LOG_TAIL_LINES = 30
NO_VALUE = '—'


@dataclass
class RunSpec:
    """One entry of the comparison: a config and its own overrides.

    Args:
        name (str): The row name of the table and the work dir's folder.
        config (str): The config file.
        options (list[str]): KEY=VALUE overrides of this run, as ``tools/train.py --cfg-options`` takes them.
        epochs (int, optional): The run's own epochs (its item ``epochs=N``); None trains ``--epochs``.
    """
    name: str
    config: str
    options: List[str]
    epochs: Optional[int] = None


@dataclass
class SeedResult:
    """One training of a run.

    Args:
        top1 (dict[int, float]): The kNN top-1 after every evaluation epoch.
        train_seconds (float, optional): The training's wall time; None where it was not recorded.
    """
    top1: Dict[int, float]
    train_seconds: Optional[float]


@dataclass
class RunSummary:
    """One run over its seeds; every statistic is a ``{'mean', 'std', 'seeds'}`` dict (the sample std).

    Args:
        epochs (int): The run's training epochs (its last evaluation epoch).
        top1 (dict[int, dict]): The kNN top-1 after every evaluation epoch of the run.
        train_seconds (dict, optional): The training wall time; None unless every seed recorded it.
    """
    epochs: int
    top1: Dict[int, Dict[str, float]]
    train_seconds: Optional[Dict[str, float]]


def parse_options(pairs: Sequence[str]) -> dict:
    """KEY=VALUE strings parsed into values as ``--cfg-options`` parses them (``1`` int, ``[1,2]`` list, ...)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('options', nargs='*', action=DictAction)
    return parser.parse_args(list(pairs)).options or {}


def parse_run(values: Sequence[str]) -> RunSpec:
    """A ``--run NAME CONFIG [KEY=VALUE ...]`` argument as a :class:`RunSpec`, its ``epochs=N`` item taken out.

    Raises:
        ValueError: If a value is missing, the config does not exist, an option is not KEY=VALUE or sets a key
            that the budget sets, or ``epochs=`` is repeated or not a positive integer.
    """
    if len(values) < 2:
        raise ValueError(f'--run {" ".join(values)}: give a name and a config, then any KEY=VALUE overrides, e.g. '
                         '--run zero-init configs/pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py '
                         'model.backbone.zero_init_residual=True')
    name, config, *items = values
    if not osp.isfile(config):
        raise ValueError(f'--run {name}: the config {config} does not exist')
    budget = [item for item in items if item.split('=', 1)[0] == EPOCHS_ITEM]
    options = [item for item in items if item.split('=', 1)[0] != EPOCHS_ITEM]
    check_options(options, f'--run {name}')
    if not budget:
        return RunSpec(name, config, options)
    value = budget[-1].split('=', 1)[-1]
    if len(budget) > 1 or not value.isdigit() or int(value) < 1:
        raise ValueError(f'--run {name}: {" ".join(budget)}: give the run\'s own epochs once, as a positive '
                         f'integer, e.g. {EPOCHS_ITEM}=14')
    return RunSpec(name, config, options, int(value))


def check_options(options: Sequence[str], where: str) -> None:
    """Refuse overrides that are not KEY=VALUE or that set one of :data:`BUDGET_KEYS`.

    Raises:
        ValueError: With the offending option and the flag to use instead.
    """
    for option in options:
        if '=' not in option:
            raise ValueError(f'{where}: {option!r} is not KEY=VALUE (e.g. model.head.temperature=0.1)')
        key = option.split('=', 1)[0]
        if key in BUDGET_KEYS:
            raise ValueError(f'{where}: {key} is set by --seeds, --epochs (or a run\'s {EPOCHS_ITEM}=N) and '
                             f'--val-interval; drop {option!r}')


def data_root_options(data_root: str) -> List[str]:
    """Overrides that point the training set and both kNN splits at a CustomDataset-layout folder.

    The instance classifier follows the folder's training set (``model.head.num_classes='auto'``, sized by
    ``InstanceCountCheckHook``).

    Raises:
        ValueError: If the folder lacks ``train/`` or ``test/``.
    """
    missing = [split for split in ('train', 'test') if not osp.isdir(osp.join(data_root, split))]
    if missing:
        raise ValueError(f'--data-root {data_root} has no {" or ".join(s + "/" for s in missing)} folder: it must '
                         'hold train/CLASS/*.png (the training set and the kNN references) and test/CLASS/*.png '
                         '(the held-out images), the layout that tools/prepare_digits.py writes in data/digits')
    return [f'train_dataloader.dataset.data_root={data_root}', f'val_dataloader.dataset.train.data_root={data_root}',
            f'val_dataloader.dataset.test.data_root={data_root}', 'model.head.num_classes=auto']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--run', nargs='+', action='append', required=True, metavar='ITEM',
                        help='NAME CONFIG [KEY=VALUE ...]: a run of the comparison, its name, its config and its '
                        f'own overrides, among them {EPOCHS_ITEM}=N for its own epochs; repeat it for every run')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='randomness.seed of each training')
    parser.add_argument('--epochs', type=int, required=True,
                        help=f'training epochs of every run without its own {EPOCHS_ITEM}=N')
    parser.add_argument('--val-interval', type=int, default=1, help='epochs between two kNN validations')
    parser.add_argument('--out-dir', required=True, help='the work dirs, the table, the JSON and the plot')
    parser.add_argument('--data-root', help='a CustomDataset-layout folder with train/ and test/ for every run')
    parser.add_argument('--reuse', action='store_true',
                        help='keep the finished runs: a work dir whose train.log starts with the same command and '
                        'whose scalars hold every validation')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='overrides shared by all runs, e.g. train_dataloader.num_workers=0 '
                        'val_dataloader.num_workers=0')
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.val_interval < 1:
        parser.error(f'--epochs {args.epochs} and --val-interval {args.val_interval} must be at least 1')
    try:
        args.runs = [parse_run(values) for values in args.run]
        check_options(args.cfg_options, '--cfg-options')
        args.data_options = data_root_options(args.data_root) if args.data_root else []
        args.budgets = {run.name: budget_options(run, user_options(run, args), run_epochs(run, args),
                                                 args.val_interval)
                        for run in args.runs}
    except ValueError as error:
        parser.error(str(error))
    names = [run.name for run in args.runs]
    if len(set(names)) != len(names):
        parser.error(f'the run names {names} repeat: give every --run its own name')
    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        parser.error(f'--seeds {args.seeds}: give at least two distinct seeds (a std needs two values)')
    return args


def schedule_options(cfg: Config, epochs: int) -> List[str]:
    """Overrides that stretch the config's ``param_scheduler`` from its ``train_cfg.max_epochs`` to ``epochs``.

    Raises:
        ValueError: If a scheduler counts iterations (``by_epoch=False``).
    """
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers, prefix = [schedulers], ['param_scheduler']
    else:
        prefix = [f'param_scheduler.{position}' for position in range(len(schedulers))]
    factor = epochs / cfg.train_cfg.max_epochs
    options = []
    for key_prefix, scheduler in zip(prefix, schedulers):
        if not scheduler.get('by_epoch', True):
            raise ValueError(f'{cfg.filename}: {scheduler["type"]} has by_epoch=False; its begin / end count '
                             'iterations, which this tool cannot scale to other epochs: write it in epochs with '
                             'by_epoch=True, convert_to_iter_based=True')
        for key in SCALED_SCHEDULER_KEYS:
            if key in scheduler:
                options.append(f'{key_prefix}.{key}={scheduler[key] * factor!r}')
        for key in WHOLE_EPOCH_SCHEDULER_KEYS:
            if isinstance(scheduler.get(key), list):
                options.append(f'{key_prefix}.{key}=[{",".join(str(round(m * factor)) for m in scheduler[key])}]')
            elif key in scheduler:
                options.append(f'{key_prefix}.{key}={max(1, round(scheduler[key] * factor))}')
    return options


def user_options(run: RunSpec, args: argparse.Namespace) -> List[str]:
    """The overrides of a run before the budget's: ``--data-root``'s, the shared ``--cfg-options``, its own."""
    return [*args.data_options, *args.cfg_options, *run.options]


def run_epochs(run: RunSpec, args: argparse.Namespace) -> int:
    """The training epochs of a run: its own ``epochs=N``, else ``--epochs``."""
    return args.epochs if run.epochs is None else run.epochs


def budget_options(run: RunSpec, options: Sequence[str], epochs: int, val_interval: int) -> List[str]:
    """The epochs, the validation interval, one final checkpoint and the stretched schedule of a run.

    Raises:
        ValueError: If the schedule cannot be stretched (see :func:`schedule_options`).
    """
    cfg = Config.fromfile(run.config, import_custom_modules=False)
    cfg.merge_from_dict(parse_options(options))
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={val_interval}',
            f'default_hooks.checkpoint.interval={epochs}', *schedule_options(cfg, epochs)]


def train_command(run: RunSpec, seed: int, work_dir: str, args: argparse.Namespace) -> List[str]:
    """The ``tools/train.py`` command of one training of a run."""
    options = [*user_options(run, args), f'randomness.seed={seed}', *args.budgets[run.name]]
    return [sys.executable, str(TRAIN_SCRIPT), run.config, '--work-dir', work_dir, '--cfg-options', *options]


def evaluation_epochs(epochs: int, val_interval: int) -> List[int]:
    """The epochs after which mmengine's EpochBasedTrainLoop validates: every ``val_interval`` and the last."""
    return sorted(set(range(val_interval, epochs + 1, val_interval)) | {epochs})


def read_scalars(work_dir: str) -> List[dict]:
    """The records of the newest training in ``work_dir`` (``TIMESTAMP/vis_data/scalars.json``), or none."""
    if not osp.isdir(work_dir):
        return []
    scalar_files = sorted(osp.join(work_dir, entry, 'vis_data', 'scalars.json') for entry in os.listdir(work_dir))
    scalar_files = [path for path in scalar_files if osp.isfile(path)]
    if not scalar_files:
        return []
    with open(scalar_files[-1]) as scalars:  # the timestamps (YYYYMMDD_HHMMSS) sort by time
        return [json.loads(line) for line in scalars]


def knn_top1(records: Sequence[dict]) -> Dict[int, float]:
    """``{epoch: kNN top-1}`` of the validations among ``records`` (their step is the epoch)."""
    return {int(record['step']): float(record[METRIC]) for record in records if METRIC in record}


def peak_lr(records: Sequence[dict]) -> float:
    """The largest learning rate that the training logged (of the first parameter group), ``nan`` if none."""
    return max((float(record['lr']) for record in records if 'lr' in record), default=math.nan)


def logged_command(work_dir: str) -> Optional[str]:
    """The ``tools/train.py`` command that :func:`train` wrote on the first line of ``WORK_DIR/train.log``."""
    log_path = osp.join(work_dir, 'train.log')
    if not osp.isfile(log_path):
        return None
    with open(log_path) as log:
        return log.readline().rstrip('\n')


def recorded_seconds(work_dir: str) -> Optional[float]:
    """The wall time that :func:`train` wrote to ``WORK_DIR/train_seconds.json``, None where there is none."""
    seconds_path = osp.join(work_dir, SECONDS_FILE)
    if not osp.isfile(seconds_path):
        return None
    with open(seconds_path) as seconds_file:
        return float(json.load(seconds_file)['seconds'])


def train(command: List[str], work_dir: str) -> float:
    """Run one ``tools/train.py`` command, its output into ``WORK_DIR/train.log``; its wall time in seconds.

    The wall time goes to ``WORK_DIR/train_seconds.json`` when the training succeeds (an older record is removed
    when it starts).

    Raises:
        RuntimeError: If it fails, with the end of its log.
    """
    os.makedirs(work_dir, exist_ok=True)
    log_path, seconds_path = osp.join(work_dir, 'train.log'), osp.join(work_dir, SECONDS_FILE)
    if osp.isfile(seconds_path):
        os.remove(seconds_path)
    with open(log_path, 'w') as log:
        log.write(shlex.join(command) + '\n')
        log.flush()
        start = time.perf_counter()
        return_code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
    if return_code != 0:
        with open(log_path) as log:
            tail = ''.join(log.readlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(f'{shlex.join(command)}\nexited with {return_code}; the end of {log_path}:\n{tail}')
    with open(seconds_path, 'w') as seconds_file:
        json.dump(dict(seconds=seconds), seconds_file)
    return seconds


def run_all(args: argparse.Namespace) -> Dict[str, Dict[int, SeedResult]]:
    """Train (or, with ``--reuse``, find) every run at every seed; ``{name: {seed: SeedResult}}``."""
    trainings = [(run, seed) for run in args.runs for seed in args.seeds]
    results = {}
    for number, (run, seed) in enumerate(trainings, start=1):
        work_dir = osp.abspath(osp.join(args.out_dir, 'runs', run.name, f'seed_{seed}'))
        progress = f'[{number}/{len(trainings)}] {run.name}, seed {seed}'
        epochs = evaluation_epochs(run_epochs(run, args), args.val_interval)
        command = train_command(run, seed, work_dir, args)
        records = read_scalars(work_dir)
        if args.reuse and logged_command(work_dir) == shlex.join(command) and knn_top1(records).keys() == set(epochs):
            seconds = recorded_seconds(work_dir)
            how = 'reused, ' + ('train time not recorded' if seconds is None else f'trained in {seconds:.0f} s')
        else:
            print(f'{progress}: training {epochs[-1]} epochs in {work_dir}', flush=True)
            seconds = train(command, work_dir)
            how = f'trained in {seconds:.0f} s'
            records = read_scalars(work_dir)
            missing = sorted(set(epochs) - knn_top1(records).keys())
            if missing:
                raise RuntimeError(f'{work_dir}: no {METRIC} of epochs {missing} in its scalars.json; see '
                                   f'{osp.join(work_dir, "train.log")}')
        top1 = knn_top1(records)
        print(f'{progress}: {METRIC} {top1[epochs[-1]]:.2f}% after epoch {epochs[-1]} ({how}, peak lr '
              f'{peak_lr(records):.3g})', flush=True)
        results.setdefault(run.name, {})[seed] = SeedResult({epoch: top1[epoch] for epoch in epochs}, seconds)
    return results


def statistic(values: Sequence[float]) -> Dict[str, float]:
    """``{'mean', 'std', 'low', 'high', 'seeds'}`` of the values of the seeds (the sample std, the extremes)."""
    return dict(mean=statistics.mean(values), std=statistics.stdev(values), low=min(values), high=max(values),
                seeds=len(values))


def summarise(per_seed: Dict[int, SeedResult]) -> RunSummary:
    """One run's :class:`RunSummary` from its ``{seed: SeedResult}``."""
    epochs = sorted(next(iter(per_seed.values())).top1)
    seconds = [result.train_seconds for result in per_seed.values()]
    return RunSummary(epochs=epochs[-1],
                      top1={epoch: statistic([result.top1[epoch] for result in per_seed.values()])
                            for epoch in epochs},
                      train_seconds=None if None in seconds else statistic(seconds))


def table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """One Markdown table line: the first cell left-aligned, the numbers right-aligned."""
    padded = [cell.ljust(width) if column == 0 else cell.rjust(width)
              for column, (cell, width) in enumerate(zip(cells, widths))]
    return f'| {" | ".join(padded)} |'


def top1_cell(value: Optional[Dict[str, float]]) -> str:
    """A top-1 statistic as ``mean ± std``, ``—`` where there is none."""
    return NO_VALUE if value is None else f'{value["mean"]:.2f} ± {value["std"]:.2f}'


def difference_cell(final: Dict[str, float], first: Dict[str, float]) -> str:
    """A final top-1's difference to the first run's, and that difference in standard errors of the difference
    of two means, ``sqrt(s_1^2 / n_1 + s_2^2 / n_2)``: e.g. ``+1.01 (+1.0 SE)``."""
    difference = final['mean'] - first['mean']
    error = math.sqrt(final['std']**2 / final['seeds'] + first['std']**2 / first['seeds'])
    return f'{difference:+.2f}' + (f' ({difference / error:+.1f} SE)' if error > 0 else '')


def markdown_table(summaries: Dict[str, RunSummary], seeds: Sequence[int]) -> str:
    """The comparison as a Markdown table with a caption line.

    Rows: the runs; columns: the seeds, the run's epochs, its mean training wall time (``train s``), the top-1
    (``mean ± std``) after every epoch that some run evaluates (``—`` where this one does not) and after its last
    epoch (``final``), the lowest to the highest seed's final top-1 (``final range``) and the final mean's
    difference to the first run's (``vs first``, see :func:`difference_cell`).
    """
    epochs = sorted(set().union(*(summary.top1 for summary in summaries.values())))
    header = ['run', 'seeds', 'epochs', 'train s', *(f'epoch {epoch}' for epoch in epochs), 'final', 'final range',
              'vs first']
    first = next(iter(summaries.values()))
    rows = [[name, str(summary.top1[summary.epochs]['seeds']), str(summary.epochs),
             NO_VALUE if summary.train_seconds is None else f'{summary.train_seconds["mean"]:.0f}',
             *(top1_cell(summary.top1.get(epoch)) for epoch in epochs), top1_cell(summary.top1[summary.epochs]),
             f'{summary.top1[summary.epochs]["low"]:.2f}–{summary.top1[summary.epochs]["high"]:.2f}',
             NO_VALUE if summary is first else difference_cell(summary.top1[summary.epochs], first.top1[first.epochs])]
            for name, summary in summaries.items()]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    rule = ['-' * widths[0], *('-' * (width - 1) + ':' for width in widths[1:])]
    budgets = {summary.epochs for summary in summaries.values()}
    budget = (f'{budgets.pop()} epochs per run' if len(budgets) == 1 else
              'epochs ' + ', '.join(f'{name} {summary.epochs}' for name, summary in summaries.items()))
    caption = (f'Weighted-kNN top-1 (%) of the held-out images, mean ± sample std over seeds '
               f'{", ".join(map(str, seeds))}; {budget}; final: after the run\'s last epoch; final range: its lowest '
               f'and highest seed; vs first: the final mean minus the first run\'s, in standard errors of that '
               f'difference; train s: mean wall time of a training in seconds ({NO_VALUE}: not recorded).')
    return '\n'.join([caption, '', *(table_line(cells, widths) for cells in [header, rule, *rows])]) + '\n'


def plot(summaries: Dict[str, RunSummary], path: str) -> None:
    """kNN top-1 against epoch, one line per run with a ± std band, as a PNG (matplotlib's Agg canvas)."""
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, summary in summaries.items():
        epochs = sorted(summary.top1)
        mean = [summary.top1[epoch]['mean'] for epoch in epochs]
        std = [summary.top1[epoch]['std'] for epoch in epochs]
        line, = axes.plot(epochs, mean, marker='o',
                          label=f'{name} ({summary.epochs} epochs, n={summary.top1[summary.epochs]["seeds"]})')
        axes.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                          color=line.get_color(), alpha=0.2)
    axes.set_xlabel('epoch')
    axes.set_ylabel('weighted kNN top-1 (%)')
    axes.set_title('mean ± std over seeds')
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def write_outputs(results: Dict[str, Dict[int, SeedResult]], summaries: Dict[str, RunSummary], table: str,
                  args: argparse.Namespace) -> List[str]:
    """Write ``table.md``, ``results.json`` (every seed's values, the summaries) and ``knn_top1.png``; their paths.

    Every run of ``results.json`` holds its ``epochs``, ``top1`` (``{seed: {epoch: top-1}}``), ``train_seconds``
    (``{seed: seconds}``, ``null`` where not recorded), ``summary`` (``{epoch: {mean, std, low, high, seeds}}``) and
    ``train_seconds_summary`` (``{mean, std, seeds}``, ``null`` unless every seed recorded its time).
    """
    os.makedirs(args.out_dir, exist_ok=True)
    table_path, json_path, plot_path = (osp.join(args.out_dir, name)
                                        for name in ('table.md', 'results.json', 'knn_top1.png'))
    with open(table_path, 'w') as table_file:
        table_file.write(table)
    runs = [dict(name=run.name, config=run.config, options=user_options(run, args), epochs=run_epochs(run, args),
                 top1={seed: result.top1 for seed, result in results[run.name].items()},
                 train_seconds={seed: result.train_seconds for seed, result in results[run.name].items()},
                 summary=summaries[run.name].top1, train_seconds_summary=summaries[run.name].train_seconds)
            for run in args.runs]
    with open(json_path, 'w') as json_file:
        json.dump(dict(metric=METRIC, epochs=args.epochs, val_interval=args.val_interval, seeds=args.seeds, runs=runs),
                  json_file, indent=2)
    plot(summaries, plot_path)
    return [table_path, json_path, plot_path]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    script, arguments = (sys.argv[0], sys.argv[1:]) if argv is None else (__file__, list(argv))
    print(f'command: {shlex.join(["python", script, *arguments])}')
    for run in args.runs:
        epochs = run_epochs(run, args)
        print(f'budget:  {run.name}: {epochs} epochs, kNN validation after epochs '
              f'{evaluation_epochs(epochs, args.val_interval)}, seeds {args.seeds}', flush=True)
    results = run_all(args)
    summaries = {name: summarise(per_seed) for name, per_seed in results.items()}
    table = markdown_table(summaries, args.seeds)
    paths = write_outputs(results, summaries, table, args)
    print('\n' + table)
    print('written: ' + ', '.join(paths))


if __name__ == '__main__':
    main()
