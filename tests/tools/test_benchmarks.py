"""Smoke runs of the benchmarks in tools/benchmarks/ at tiny sizes: they run and print their tables.

Nothing here asserts a time. The head benchmark's byte counts are exact, so they are checked: flat in N for
the sampled mode, linear in N for the dense baseline. One case runs a script as a command; the others
call its ``main`` in this process with command-line flags, which saves the imports' start-up time.
"""
import re
import sys

import pytest
import torch
from torch.optim.sgd import sgd

from conftest import REPO_ROOT, run_cli

BENCHMARKS = REPO_ROOT / 'tools' / 'benchmarks'
sys.path.insert(0, str(BENCHMARKS))
TINY_HEAD = ['--rows', '1000', '2000', '--dense-rows', '400', '800', '--dim', '16', '--batch-size', '32',
             '--num-negatives', '128', '--rounds', '2', '--steps-per-round', '1', '--extra-warmup-steps', '1',
             '--profile-steps', '1', '--threads', '1']


def table_rows(output: str, first_cell: str):
    """The cells of the Markdown table rows whose first cell is ``first_cell``."""
    return [[cell.strip() for cell in line.strip('|').split('|')] for line in output.splitlines()
            if re.match(rf'\|\s*{re.escape(first_cell)}\s*\|', line)]


def run_main(module_name: str, flags, monkeypatch, capsys) -> str:
    """Run a benchmark's ``main`` with these command-line flags in this process; return what it printed.

    Where the benchmark takes a malloc policy, ``--malloc system``: the policy is the process's, and must not
    change for the later tests."""
    module = __import__(module_name)
    malloc = ['--malloc', 'system'] if hasattr(module, 'apply_common_arguments') else []
    monkeypatch.setattr(sys, 'argv', [module.__file__, *flags, *malloc])
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into later tests
    return capsys.readouterr().out


def check_head_step_output(out: str, schedule: str, timed_steps: int) -> None:
    assert 'command:  ' in out and 'bench_head_step.py --rows 1000 2000' in out
    assert re.search(r'machine: .*cores', out) and 'torch:' in out and '\nmalloc:   ' in out
    assert f'sampled + lazy: {schedule} schedule' in out
    assert re.search(r't\(2000\) / t\(1e3\) = \d+\.\d+: goal <= 1\.1 (met|NOT met)', out)
    assert re.search(r't\(800\) / t\(400\) = \d+\.\d', out)
    # cells: N, table, classes C, ms, IQR, steps, ratio, bytes on the accelerator
    small, large = table_rows(out, '1e3')[0], table_rows(out, '2000')[0]
    assert small[2] == large[2] == '160'  # K + B rows whatever N is
    assert small[5] == large[5] == str(timed_steps)
    assert small[6] == '1.000'
    assert small[7] == large[7]
    dense_small, dense_large = table_rows(out, '400')[0], table_rows(out, '800')[0]
    assert (dense_small[2], dense_large[2]) == ('400', '800')
    assert dense_small[7] != dense_large[7]
    for tensors in ('gathered', 'logits + grad', 'row grads', 'written back'):
        assert len(set(table_rows(out, tensors)[0][1:])) == 1, tensors
    assert len(table_rows(out, 'correct (Eq. 3)')[0]) == 3
    # the largest N beside its matrix products, timed in the same run, and the phases' share
    assert [row[0] for row in table_rows(out, 'head step') + table_rows(out, 'matrix products')
            + table_rows(out, 'copy of (C, D) rows')] == ['head step', 'matrix products', 'copy of (C, D) rows']
    assert re.search(r'head step / matrix products = \d+\.\d\d: goal <= 1\.5 (met|NOT met)', out)
    assert re.search(r'phases \(instrumented, mean of 1 steps\): logits \+ loss \+ backward \d+\.\d\d ms = \d+\.\d\dx '
                     r'the products; the rest \d+\.\d\d ms \(recent classes \d+\.\d\d, gather \d+\.\d\d, correct '
                     r'\(Eq\. 3\) \d+\.\d\d, SGD update \(Eq\. 2\) \d+\.\d\d, write back \d+\.\d\d\)', out)
    assert re.search(r'memory bound: the operations besides the products read and write \d+\.\d+ [MG]iB per step; '
                     r"at the copy's \d+\.\d GB/s that is \d+\.\d ms, so products \+ stream = \d+\.\d\dx the products: "
                     r'the goal is (within|out of) reach of these operations; the step spends -?\d+\.\d ms beyond its '
                     r'products = -?\d+\.\d\dx that stream time', out)


def test_head_step_command_prints_flat_bytes_for_sampled_rows_and_linear_for_dense(tmp_path):
    result = run_cli([sys.executable, BENCHMARKS / 'bench_head_step.py', *TINY_HEAD,
                      '--schedule', 'interleaved'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_head_step_output(result.stdout, 'interleaved', timed_steps=2)
    # the default policy, in a process of its own: glibc keeps freed blocks, as a GPU's caching allocator does
    assert 'malloc:   freed blocks kept for reuse (glibc mallopt: M_MMAP_MAX=0' in result.stdout


def test_operation_bytes_count_what_each_operation_streams_and_leave_out_products_and_views():
    from bench_head_step import OperationBytes
    rows, other, momentum, index = torch.randn(1000, 8), torch.randn(1000, 8), torch.zeros(1000, 8), torch.arange(10)
    size = rows.numel() * 4
    expected = [(lambda: rows * other, 3 * size),  # two reads, one write
                (lambda: rows.mul_(2.0), 2 * size),  # in place: self read and written
                (lambda: rows.t(), 0), (lambda: rows @ other.t(), 0),  # a view; a product
                (lambda: rows.index_select(0, index), 2 * 10 * 8 * 4 + 10 * 8),  # the gathered rows, and the index
                (lambda: rows.index_copy_(0, index, other[:10]), 2 * (10 * 8 * 4 + 10 * 8)),
                (lambda: sgd([rows], [other], [momentum], weight_decay=0.1, momentum=0.9, lr=0.1,
                             dampening=0., nesterov=False, maximize=False, fused=True), 5 * size)]  # w, u, g
    for operation, moved in expected:
        with OperationBytes() as counter:
            operation()
        assert counter.bytes == moved


def test_head_step_sweeps_repeat_the_sweep(monkeypatch, capsys):
    out = run_main('bench_head_step', [*TINY_HEAD, '--schedule', 'sweeps', '--sweeps', '2'], monkeypatch, capsys)
    check_head_step_output(out, 'sweeps', timed_steps=4)
    assert 'malloc:   system default' in out
    assert 'whole sweep repeated 2 times' in out


def test_head_step_refuses_a_queue_larger_than_the_table(monkeypatch, capsys):
    with pytest.raises(ValueError, match=r'--rows 1000 is smaller than K \+ B = 1024 \+ 256'):
        run_main('bench_head_step', ['--rows', '1000', '--num-negatives', '1024'], monkeypatch, capsys)


def test_throughput_prints_images_per_second_and_both_ratios(monkeypatch, capsys):
    arguments = ['--backbone', 'tiny', '--image-size', '16', '--batch-size', '8', '--num-instances', '300',
                 '--num-negatives', '64', '--rounds', '2', '--steps-per-round', '1', '--warmup-steps', '0',
                 '--threads', '1']
    out = run_main('bench_throughput', arguments, monkeypatch, capsys)
    assert 'bench_throughput.py --backbone tiny' in out and 'machine:' in out
    pics = ('PIC', 'PIC, config head', 'PIC, K + B-row table')
    views = {name: table_rows(out, name)[0][1] for name in pics + ('SimCLR', 'MoCoV2')}
    assert views == {'PIC': '1', 'PIC, config head': '1', 'PIC, K + B-row table': '1', 'SimCLR': '2', 'MoCoV2': '2'}
    assert all(table_rows(out, name)[0][4] == '2' for name in views)
    for pic in pics:
        name = re.escape(pic)
        assert re.search(rf'\n{name} / SimCLR: \d+\.\d+x images/s \(bound 2\.0x, goal >= 1\.8x: (met|NOT met)\)', out)
        assert re.search(rf'\n{name} / MoCoV2: \d+\.\d+x images/s \(bound 1\.33x, goal >= 1\.25x: (met|NOT met)\)',
                         out)
    # the floor: the config-head step plus the paper head's products, timed in the same rounds (B x (K + B) x D)
    assert re.search(r"\nthe paper head's floor: PIC = config head \d\.\d{3} s \+ paper head -?\d\.\d{3} s per step; "
                     r"the head's three matrix products alone \(8 x 72 x 128\) take \d\.\d{3} s", out)
    for other, goal in (('SimCLR', '1.8'), ('MoCoV2', '1.25')):
        assert re.search(rf'\na PIC step of config head \+ matrix products / {other}: \d+\.\d\dx images/s \(goal >= '
                         rf'{re.escape(goal)}x: (reachable|out of reach on this machine)\)', out)


def test_throughput_refuses_a_queue_that_is_not_a_multiple_of_the_batch(monkeypatch, capsys):
    with pytest.raises(ValueError, match='is not a multiple of --batch-size 48.*use e.g. --num-negatives 65520'):
        run_main('bench_throughput', ['--batch-size', '48'], monkeypatch, capsys)


def test_throughput_starts_pic_with_a_full_queue_of_distinct_recent_negatives(monkeypatch):
    import bench_throughput
    monkeypatch.setattr(sys, 'argv', ['bench_throughput.py', '--backbone', 'tiny', '--num-instances', '300',
                                      '--num-negatives', '64', '--batch-size', '8', '--malloc', 'system'])
    args = bench_throughput.parse_args()
    bench_throughput.apply_common_arguments(args)
    fifo = bench_throughput.TrainStep(bench_throughput.model_specs(args)['PIC'], args).model.head.negatives
    assert fifo.recent_indices.numel() == 64 and fifo.recent_indices.unique().numel() == 64
    assert int(fifo.recent_indices.min()) >= 0  # every slot holds an instance: a step scores K + B rows


def test_throughput_compares_pic_with_a_table_of_as_many_rows_as_its_step_scores(monkeypatch):
    """The K + B-row table scores the classes of a PIC step, all of its rows (read in order) every step."""
    import bench_throughput
    monkeypatch.setattr(sys, 'argv', ['bench_throughput.py', '--backbone', 'tiny', '--num-instances', '300',
                                      '--num-negatives', '64', '--batch-size', '8'])
    args = bench_throughput.parse_args()
    specs = bench_throughput.model_specs(args)
    head = specs['PIC, K + B-row table'].cfg['head']
    assert (head['num_classes'], head['negatives'], specs['PIC, K + B-row table'].num_instances) == (72, 'full', 72)
    assert specs['PIC'].cfg['head']['negatives'] == 'recent' and specs['PIC'].cfg['head']['num_classes'] == 300
    monkeypatch.setattr(sys, 'argv', ['bench_throughput.py', '--negatives', 'full'])
    assert 'PIC, K + B-row table' not in bench_throughput.model_specs(bench_throughput.parse_args())


def test_r50_run_trains_each_variant_through_tools_train_and_prints_its_row(tmp_path, monkeypatch, capsys):
    """ResNet-50 at 224 px, a tiny table and batch: every variant trains through tools/train.py with its own
    placement and precision, and gets a row from mmengine's logged iterations."""
    work_dir = tmp_path / 'run'
    out = run_main('bench_r50_run', ['--device', 'cpu', '--variants', 'device-fp32', 'host-bf16', '--batch-size', '4',
                                     '--iters', '2', '--warmup', '1', '--images', '8', '--num-instances', '2048',
                                     '--num-negatives', '256', '--num-workers', '0', '--work-dir', str(work_dir)],
                   monkeypatch, capsys)
    assert 'tools/train.py' in out and 'N = 2,048 rows, K = 256' in out
    [device_row], [host_row] = table_rows(out, 'device-fp32'), table_rows(out, 'host-bf16')
    for row in (device_row, host_row):
        assert float(row[4]) > 0 and row[6] == 'n/a (CPU)' and row[7] == '1'  # images/s, memory, steps timed
    assert device_row[5] == '1.00'
    written = {name: (work_dir / name / 'pic_r50_short.py').read_text() for name in ('device-fp32', 'host-bf16')}
    assert "placement='device'" in written['device-fp32'] and "dtype='bfloat16'" not in written['device-fp32']
    assert "placement='host'" in written['host-bf16'] and "dtype='bfloat16'" in written['host-bf16']


@pytest.mark.parametrize('flags, message', [(['--variants', 'device-amp'], "--amp needs a GPU"),
                                            (['--variants', 'gpu-fp32'], 'expected PLACEMENT-PRECISION'),
                                            (['--images', '8'], '--images 8 is below --batch-size 64')])
def test_r50_run_refuses_what_it_cannot_run(flags, message, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_main('bench_r50_run', ['--device', 'cpu', *flags], monkeypatch, capsys)
    assert message in capsys.readouterr().err
