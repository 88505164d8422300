"""tools/analysis_tools/compare_methods.py trains every run at every seed and tabulates and plots the kNN top-1.

The real run (one per module, :func:`comparison`): the PIC tiny config for ``--epochs 3`` and a variant of it with
its own ``epochs=4`` on the digits given by ``--data-root``, 2 seeds, a kNN validation every 2 epochs, on the
first 256 training images (the head sized by ``num_classes='auto'``) at batch 8 (32 iterations per epoch, so the
warm-up of 3 / 40 epochs is 2 iterations), the kNN's references cut to 300 images. It calls the tool's ``main``
in this process (the trainings are its subprocesses, with one thread).
"""
import contextlib
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

from analysis_tools.compare_methods import (RunSummary, budget_options, main, markdown_table, parse_args, parse_run,
                                            train_command)
from conftest import REPO_ROOT, TINY_CONFIG, run_cli

SCRIPT = REPO_ROOT / 'tools' / 'analysis_tools' / 'compare_methods.py'
NPID_CIFAR_CONFIG = REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18_1xb128-steplr-200e_cifar10.py'
BASE_LR = 0.015  # optim_wrapper.optimizer.lr of the PIC tiny config
TINY = ['train_dataloader.dataset.indices=256', 'train_dataloader.batch_size=8',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'val_dataloader.dataset.train.indices=300']


@dataclass
class Comparison:
    """The tool's first run: its flags, its out dir, what it printed, its results.json and table.md then."""
    flags: List[str]
    out_dir: Path
    out: str
    results: dict
    table: str


def table_rows(table: str) -> List[List[str]]:
    """The cells of the Markdown table's rows, header and rule included."""
    return [[cell.strip() for cell in line.strip('|').split('|')] for line in table.splitlines()
            if line.startswith('|')]


def learning_rates(work_dir: Path) -> List[float]:
    """The lr of every logged training step in a work dir's scalars.json."""
    scalars = next(work_dir.glob('*/vis_data/scalars.json'))
    return [record['lr'] for record in map(json.loads, scalars.read_text().splitlines()) if 'lr' in record]


@pytest.fixture(scope='module')
def comparison(digits_workspace, tmp_path_factory) -> Comparison:
    """``pic`` at ``--epochs 3`` and ``no-zero-init`` at its own ``epochs=4``, seeds 0 and 1, kNN every 2 epochs."""
    tmp_path = tmp_path_factory.mktemp('compare')
    out_dir = tmp_path / 'compare'
    flags = [str(flag) for flag in [
        '--run', 'pic', TINY_CONFIG, '--run', 'no-zero-init', TINY_CONFIG, 'model.backbone.zero_init_residual=False',
        'epochs=4', '--seeds', '0', '1', '--epochs', '3', '--val-interval', '2', '--data-root',
        digits_workspace / 'data' / 'digits', '--out-dir', out_dir, '--cfg-options', *TINY]]
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(io.StringIO()) as out:
        monkeypatch.chdir(tmp_path)  # where the configs' own data/digits/ is not: the runs read --data-root
        monkeypatch.setenv('OMP_NUM_THREADS', '1')
        main(flags)
    return Comparison(flags, out_dir, out.getvalue(), json.loads((out_dir / 'results.json').read_text()),
                      (out_dir / 'table.md').read_text())


def test_runs_with_their_own_epochs_give_a_table_a_json_and_a_plot(comparison):
    out, results, out_dir = comparison.out, comparison.results, comparison.out_dir
    for number, (name, seed, epochs) in enumerate([('pic', 0, 3), ('pic', 1, 3), ('no-zero-init', 0, 4),
                                                   ('no-zero-init', 1, 4)], 1):
        assert f'[{number}/4] {name}, seed {seed}: training {epochs} epochs in ' in out, out
        assert re.search(rf'\[{number}/4\] {name}, seed {seed}: knn/top1 \d+\.\d\d% after epoch {epochs} \(trained '
                         r'in \d+ s, peak lr 0\.01\d*\)', out), out

    assert [run['name'] for run in results['runs']] == ['pic', 'no-zero-init']
    assert [run['epochs'] for run in results['runs']] == [3, 4]
    assert results['runs'][1]['options'][-1] == 'model.backbone.zero_init_residual=False'  # epochs=4 is no option
    for run, evaluated in zip(results['runs'], (['2', '3'], ['2', '4'])):
        assert sorted(run['top1']) == ['0', '1'] and all(sorted(top1) == evaluated for top1 in run['top1'].values())
        assert all(0 <= value <= 100 for top1 in run['top1'].values() for value in top1.values())
        assert sorted(run['summary']) == evaluated and run['summary'][evaluated[-1]]['seeds'] == 2
        assert sorted(run['train_seconds']) == ['0', '1'] and all(s > 0 for s in run['train_seconds'].values())
        assert run['train_seconds_summary']['seeds'] == 2 and run['train_seconds_summary']['mean'] > 0
        for seed in ('0', '1'):
            recorded = json.loads((out_dir / 'runs' / run['name'] / f'seed_{seed}' / 'train_seconds.json').read_text())
            assert recorded == {'seconds': run['train_seconds'][seed]}
    assert any(run['top1']['0'] != run['top1']['1'] for run in results['runs']), results

    rows = table_rows(comparison.table)
    assert rows[0] == ['run', 'seeds', 'epochs', 'train s', 'epoch 2', 'epoch 3', 'epoch 4', 'final', 'final range',
                       'vs first']
    assert [row[0] for row in rows[2:]] == ['pic', 'no-zero-init']
    for row, run, evaluated in zip(rows[2:], results['runs'], (['2', '3', None], ['2', None, '4'])):
        cells = [f'{run["summary"][epoch]["mean"]:.2f} ± {run["summary"][epoch]["std"]:.2f}' if epoch else '—'
                 for epoch in evaluated]
        final = run['summary'][str(run['epochs'])]
        finals = [run['top1'][seed][str(run['epochs'])] for seed in ('0', '1')]
        assert (final['low'], final['high']) == (min(finals), max(finals))
        assert row[1:-1] == ['2', str(run['epochs']), f'{run["train_seconds_summary"]["mean"]:.0f}', *cells,
                             f'{final["mean"]:.2f} ± {final["std"]:.2f}', f'{min(finals):.2f}–{max(finals):.2f}']
        assert float(row[3]) > 0
    assert 'epochs pic 3, no-zero-init 4' in comparison.table.splitlines()[0]
    assert '| pic ' in out  # the table is printed too
    assert (out_dir / 'knn_top1.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # the cosine follows each run's epochs: by the last logged step the lr is near 0, not still near the config's
    # 20 epochs'
    for name in ('pic', 'no-zero-init'):
        lrs = learning_rates(out_dir / 'runs' / name / 'seed_0')
        assert lrs[-1] < 0.01 * BASE_LR < BASE_LR * 0.9 < max(lrs), (name, lrs)


def test_reuse_trains_nothing_that_finished_and_shows_no_unrecorded_time(comparison, monkeypatch, capsys):
    monkeypatch.chdir(comparison.out_dir.parent)
    # a run trained before the tool recorded wall times
    (comparison.out_dir / 'runs' / 'no-zero-init' / 'seed_1' / 'train_seconds.json').unlink()
    main([*comparison.flags, '--reuse'])
    out = capsys.readouterr().out
    assert ': training ' not in out, out
    assert len(re.findall(r'\(reused, trained in \d+ s, peak lr', out)) == 3, out
    assert '[4/4] no-zero-init, seed 1: knn/top1' in out and '(reused, train time not recorded, peak lr' in out, out
    assert len(list((comparison.out_dir / 'runs' / 'pic' / 'seed_0').glob('*/vis_data/scalars.json'))) == 1

    results = json.loads((comparison.out_dir / 'results.json').read_text())
    assert results['runs'][1]['train_seconds']['1'] is None and results['runs'][1]['train_seconds_summary'] is None
    assert results['runs'][0]['train_seconds'] == comparison.results['runs'][0]['train_seconds']
    assert results['runs'][0]['top1'] == comparison.results['runs'][0]['top1']
    rows = table_rows((comparison.out_dir / 'table.md').read_text())
    assert rows[2][3] == table_rows(comparison.table)[2][3] and rows[3][3] == '—'


def test_a_run_without_its_own_epochs_trains_the_command_it_trained_before(tmp_path):
    # the command of a run without epochs= is the one that the tool built before epochs=N: --reuse finds old runs
    args = parse_args(['--run', 'pic', str(TINY_CONFIG), 'model.head.temperature=0.1', '--run', 'long',
                       str(TINY_CONFIG), 'epochs=12', '--epochs', '10', '--val-interval', '2', '--out-dir',
                       str(tmp_path), '--cfg-options', 'train_dataloader.num_workers=0'])
    budget = ['train_cfg.max_epochs=10', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=10',
              'param_scheduler.0.begin=0.0', 'param_scheduler.0.end=0.25', 'param_scheduler.1.begin=0.25',
              'param_scheduler.1.end=10.0', 'param_scheduler.1.T_max=9.75']
    assert train_command(args.runs[0], 3, 'WORK', args) == [
        sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(TINY_CONFIG), '--work-dir', 'WORK',
        '--cfg-options', 'train_dataloader.num_workers=0', 'model.head.temperature=0.1', 'randomness.seed=3',
        *budget]
    long = train_command(args.runs[1], 3, 'WORK', args)
    assert long[6:9] == ['train_dataloader.num_workers=0', 'randomness.seed=3', 'train_cfg.max_epochs=12']
    assert long[-2:] == ['param_scheduler.1.end=12.0', 'param_scheduler.1.T_max=11.7'] and 'epochs=12' not in long


def test_the_table_has_every_evaluated_epoch_the_final_top1_the_epochs_and_the_seconds():
    def top1(epochs, offset):
        return {epoch: dict(mean=offset + epoch, std=0.5, low=offset + epoch - 1, high=offset + epoch + 0.5, seeds=3)
                for epoch in epochs}

    summaries = {'single-crop': RunSummary(6, top1([2, 4, 6], 50), dict(mean=61.4, std=3.0, seeds=3)),
                 'multi-crop': RunSummary(3, top1([2, 3], 60), None)}
    table = markdown_table(summaries, [0, 1, 2])
    caption, blank, *lines = table.splitlines()
    assert caption.startswith('Weighted-kNN top-1 (%) of the held-out images, mean ± sample std over seeds 0, 1, 2; '
                              'epochs single-crop 6, multi-crop 3; final: ') and blank == ''
    assert len({len(line) for line in lines}) == 1  # aligned
    # vs first: (63 - 56) / sqrt(0.5^2 / 3 + 0.5^2 / 3) = 17.1 standard errors
    assert table_rows(table) == [
        ['run', 'seeds', 'epochs', 'train s', 'epoch 2', 'epoch 3', 'epoch 4', 'epoch 6', 'final', 'final range',
         'vs first'],
        ['-----------', '----:', '-----:', '------:', *['-----------:'] * 5, '----------:', '---------------:'],
        ['single-crop', '3', '6', '61', '52.00 ± 0.50', '—', '54.00 ± 0.50', '56.00 ± 0.50', '56.00 ± 0.50',
         '55.00–56.50', '—'],
        ['multi-crop', '3', '3', '—', '62.00 ± 0.50', '63.00 ± 0.50', '—', '—', '63.00 ± 0.50', '62.00–63.50',
         '+7.00 (+17.1 SE)']]
    same_budget = markdown_table({'a': summaries['multi-crop'], 'b': summaries['multi-crop']}, [0, 1, 2])
    assert '; 3 epochs per run; ' in same_budget.splitlines()[0]


def test_the_schedule_is_the_config_one_at_the_new_length():
    pic = budget_options(parse_run(['pic', str(TINY_CONFIG)]), [], epochs=10, val_interval=2)
    # the config's own formula at max_epochs = 10: warm-up to 10 / 40, cosine of 10 - 10 / 40 epochs to 10
    assert pic == ['train_cfg.max_epochs=10', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=10',
                   'param_scheduler.0.begin=0.0', 'param_scheduler.0.end=0.25', 'param_scheduler.1.begin=0.25',
                   'param_scheduler.1.end=10.0', 'param_scheduler.1.T_max=9.75']
    step_lr = budget_options(parse_run(['npid', str(NPID_CIFAR_CONFIG)]), [], epochs=10, val_interval=2)
    assert step_lr[-1] == 'param_scheduler.0.milestones=[6,8]'  # 120 and 160 of 200 epochs
    # the reference length is the config's after the overrides
    assert budget_options(parse_run(['pic', str(TINY_CONFIG)]), ['train_cfg.max_epochs=5', 'param_scheduler.1.end=5'],
                          epochs=10, val_interval=2)[-2] == 'param_scheduler.1.end=10.0'


@pytest.mark.parametrize('folders, missing', [([], 'train/ or test/'), (['train'], 'test/')])
def test_a_data_root_without_the_splits_is_refused(tmp_path, folders, missing):
    for folder in folders:
        (tmp_path / folder).mkdir()
    result = run_cli([sys.executable, SCRIPT, '--run', 'pic', TINY_CONFIG, '--epochs', '1', '--out-dir',
                      tmp_path / 'out', '--data-root', tmp_path], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f'error: --data-root {tmp_path} has no {missing} folder: it must hold train/CLASS/*.png' in result.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('flags, message', [
    (['--run', 'pic'], 'give a name and a config'),
    (['--run', 'a', str(TINY_CONFIG), '--run', 'a', str(TINY_CONFIG)], 'give every --run its own name'),
    (['--run', 'a', str(TINY_CONFIG), 'randomness.seed=3'], 'randomness.seed is set by --seeds'),
    (['--run', 'a', str(TINY_CONFIG), 'train_cfg.max_epochs=3'], "--epochs (or a run's epochs=N)"),
    (['--run', 'a', str(TINY_CONFIG), '--cfg-options', 'model.head'], "'model.head' is not KEY=VALUE"),
    (['--run', 'a', str(TINY_CONFIG), '--seeds', '0'], 'give at least two distinct seeds'),
    (['--run', 'a', str(TINY_CONFIG), 'param_scheduler.0.by_epoch=False'], 'LinearLR has by_epoch=False'),
    (['--run', 'a', str(TINY_CONFIG), 'epochs=0'], "give the run's own epochs once, as a positive integer"),
    (['--run', 'a', str(TINY_CONFIG), 'epochs=2.5'], 'epochs=2.5: give'),
    (['--run', 'a', str(TINY_CONFIG), 'epochs=2', 'epochs=3'], 'epochs=2 epochs=3: give'),
])
def test_bad_command_lines_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_args([*flags, '--epochs', '1', '--out-dir', 'out'])
    assert message in capsys.readouterr().err
