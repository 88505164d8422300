"""EvalProgressHook shows the val and test loops' progress on rank 0 only, and leaves training to LoggerHook.

tests/tools/test_knn_eval.py sees it through tools/knn_eval.py on a real validation loop.
"""
import re
from types import SimpleNamespace

import pytest
from mmengine.dataset import pseudo_collate
from torch.utils.data import DataLoader

from pic_plugin.engine.hooks import EvalProgressHook
from pic_plugin.utils import progress as progress_module
from progress_output import captured_progress

NUM_IMAGES = 10


def run_pass(mode: str) -> str:
    """Call the hook around one pass over 10 images in batches of 4, as mmengine's ``ValLoop`` / ``TestLoop`` do."""
    loader = DataLoader([dict(inputs=index, data_samples=index) for index in range(NUM_IMAGES)], batch_size=4,
                        collate_fn=pseudo_collate)
    runner = SimpleNamespace(**{f'{mode}_dataloader': loader})
    hook = EvalProgressHook()
    with captured_progress() as text:
        getattr(hook, f'before_{mode}_epoch')(runner)
        for batch_idx, data_batch in enumerate(loader):
            getattr(hook, f'after_{mode}_iter')(runner, batch_idx, data_batch)
        getattr(hook, f'after_{mode}_epoch')(runner)
    return text.getvalue()


@pytest.mark.parametrize('mode', ['val', 'test'])
def test_rank_0_shows_the_images_done_with_rate_and_eta_then_a_summary(mode):
    output = run_pass(mode)
    assert re.search(rf'\] {NUM_IMAGES}/{NUM_IMAGES}, [\d.]+ task/s, elapsed: \d+s, ETA: +0s\n', output), output
    assert f'{mode} pass: {NUM_IMAGES} images in' in output


def test_other_ranks_show_nothing(monkeypatch):
    monkeypatch.setattr(progress_module, 'is_main_process', lambda: False)
    assert run_pass('val') == ''


def test_training_iterations_are_left_alone():
    hook = EvalProgressHook()
    with captured_progress() as text:
        hook.before_train_epoch(SimpleNamespace())
        hook.after_train_iter(SimpleNamespace(), 0, dict(data_samples=[0]))
    assert text.getvalue() == '' and hook.progress is None
