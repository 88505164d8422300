"""Smoke run of tools/benchmarks/bench_hard_classes.py at a tiny size: it checks itself and prints its ratio."""
import re
import sys

import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / 'tools' / 'benchmarks'))


def test_prints_the_check_the_table_and_the_ratio(monkeypatch, capsys):
    import bench_hard_classes
    flags = ['--rows', '500', '--dim', '8', '--k', '5', '--chunk-size', '64', '--key-block-size', '100',
             '--check-rows', '50', '--rounds', '2', '--threads', '1',
             '--malloc', 'system']  # the malloc policy is this process's: it must not change for the later tests
    monkeypatch.setattr(sys, 'argv', ['bench_hard_classes.py', *flags])
    threads = torch.get_num_threads()
    try:
        bench_hard_classes.main()
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert 'command:  ' in out and re.search(r'machine: .*cores', out)
    assert 'blocks of 64 query rows x 104 key rows' in out  # rounded up to whole groups of columns
    assert 'top-5 of the first 50 rows against brute force: values equal' in out
    assert re.search(r'\|\s+top_k_similar_rows \|\s+\d+\.\d+ \|.*\|\s+2 \|', out)
    assert re.search(r't\(top_k_similar_rows\) / t\(matrix products\) = \d+\.\d+: goal <= 1\.5 (met|NOT met)', out)
