"""track_progress / PassProgress: rank 0 draws mmengine's ProgressBar and logs a summary; other ranks stay quiet."""
import re

from pic_plugin.utils import PassProgress
from pic_plugin.utils import progress as progress_module
from pic_plugin.utils import track_progress
from progress_output import captured_progress

BATCHES = [list(range(4)), list(range(4)), list(range(2))]  # 10 images in batches of 4, 4, 2


def test_rank_0_shows_done_total_rate_and_eta_then_a_summary_line():
    with captured_progress() as text:
        yielded = list(track_progress(BATCHES, total=10, task='feature pass', count=len))
    assert yielded == BATCHES
    output = text.getvalue()
    assert re.search(r'\] 10/10, [\d.]+ task/s, elapsed: \d+s, ETA: +0s\n', output), output
    assert re.search(r'feature pass: 10 images in [\d.]+ s \([\d,.]+ images/s\)', output), output


def test_other_ranks_show_and_log_nothing(monkeypatch):
    monkeypatch.setattr(progress_module, 'is_main_process', lambda: False)
    with captured_progress() as text:
        yielded = list(track_progress(BATCHES, total=10, task='feature pass', count=len))
    assert yielded == BATCHES
    assert text.getvalue() == ''


def test_the_bar_is_redrawn_at_most_every_interval_and_at_the_end(monkeypatch):
    monkeypatch.setattr(progress_module, 'REDRAW_INTERVAL', float('inf'))
    with captured_progress() as text:
        for _ in track_progress(range(100), total=100, task='rows', unit='rows'):
            pass
    output = text.getvalue()
    assert output.count('\r') == 1 and '100/100' in output  # one redraw: the last one
    assert 'rows: 100 rows in' in output


def test_a_pass_that_ends_early_completes_its_line_and_a_disabled_one_is_silent():
    with captured_progress() as text:
        progress = PassProgress(total=10, task='short pass')
        progress.update(3)
        progress.finish()
        silent = PassProgress(total=10, task='silent pass', disable=True)
        silent.update(10)
        silent.finish()
    output = text.getvalue()
    assert re.search(r'3/10, .*\n.*short pass: 3 images in', output), output
    assert 'silent' not in output
