"""The examples in the docstrings of LazySGDRows and InstanceClsHead run as written."""
import doctest

import pytest
import torch

from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.utils import LazySGDRows


@pytest.mark.parametrize('obj', [LazySGDRows, InstanceClsHead], ids=lambda obj: obj.__name__)
def test_the_docstring_example_runs(obj):
    globs = {'torch': torch, 'LazySGDRows': LazySGDRows, 'InstanceClsHead': InstanceClsHead}
    tests = doctest.DocTestFinder().find(obj, obj.__name__, globs=globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    torch.manual_seed(0)
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f'{obj.__name__} has no docstring example'
    assert result.failed == 0, ''.join(report)
