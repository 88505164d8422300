"""Progress of the passes over a whole data set or table that run for minutes at ImageNet scale.

Rank 0 draws mmengine's ``ProgressBar`` (done / total, rate, elapsed, ETA) on ``sys.stdout`` and logs one
summary line through mmengine's current logger when the pass ends; the other ranks print nothing. The bar is
redrawn at most every ``REDRAW_INTERVAL`` seconds: each redraw is one more line in a log file that a job
scheduler writes from ``stdout``.
"""
import sys
import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

Item = TypeVar('Item')

REDRAW_INTERVAL = 0.5  # seconds


class PassProgress:
    """Progress of one pass, fed with the units of work done (see the module docstring).

    Use :func:`track_progress` to follow a loop; this class serves callbacks, e.g. a hook's ``after_val_iter``.

    Example::

        progress = PassProgress(total=len(dataset), task='feature extraction')
        for batch in loader:
            ...
            progress.update(len(batch))
        progress.finish()   # rank 0 logs 'feature extraction: 50,000 images in 61.2 s (817.0 images/s)'

    Args:
        total (int): Units of work in the whole pass (images, rows), for the bar and the ETA; 0 or less shows
            no bar, only the summary.
        task (str): What the pass does, for the summary line, e.g. ``'contrastive prior'``.
        unit (str): Name of one unit of work. Defaults to 'images'.
        disable (bool): Show and log nothing, on any rank (for a pass whose caller did not ask for progress).
            Defaults to False.
    """

    def __init__(self, total: int, task: str, unit: str = 'images', disable: bool = False) -> None:
        self.task = task
        self.unit = unit
        self.shown = is_main_process() and not disable
        self.bar = ProgressBar(total, file=sys.stdout) if self.shown and total > 0 else None
        self.start = self.last_redraw = time.perf_counter()
        self.done = 0
        self.undrawn = 0  # units done since the last redraw

    def update(self, units: int = 1) -> None:
        """Count ``units`` more units of work done; redraw the bar if it is due."""
        self.done += units
        if self.bar is None:
            return
        self.undrawn += units
        now = time.perf_counter()
        if now - self.last_redraw >= REDRAW_INTERVAL or self.done >= self.bar.task_num:
            self._redraw(now)

    def finish(self) -> None:
        """End the bar's line and log the summary: ``task: N unit in T s (R unit/s)``."""
        if not self.shown:
            return
        elapsed = time.perf_counter() - self.start
        if self.bar is not None:
            self._redraw(time.perf_counter())
            self.bar.file.write('\n')
            self.bar.file.flush()
        rate = self.done / elapsed if elapsed > 0 else float('inf')
        print_log(f'{self.task}: {self.done:,} {self.unit} in {elapsed:.1f} s ({rate:,.1f} {self.unit}/s)',
                  logger='current')

    def _redraw(self, now: float) -> None:
        if self.undrawn > 0:  # ProgressBar.update refuses 0
            self.bar.update(self.undrawn)
        self.undrawn = 0
        self.last_redraw = now


def track_progress(items: Iterable[Item],
                   total: int,
                   task: str,
                   unit: str = 'images',
                   count: Optional[Callable[[Item], int]] = None) -> Iterator[Item]:
    """Yield ``items`` while rank 0 shows the pass's progress; log a summary line when they run out.

    An item counts as done when the loop body that received it returns. See :class:`PassProgress`.

    Example::

        for data_batch in track_progress(loader, len(loader.dataset), 'contrastive prior',
                                         count=lambda batch: len(batch['data_samples'])):
            ...

    Args:
        items (Iterable): What the pass iterates over, e.g. a data loader's batches.
        total (int): Units of work in the whole pass (images, rows), for the bar and the ETA.
        task (str): What the pass does, for the summary line, e.g. ``'contrastive prior'``.
        unit (str): Name of one unit of work. Defaults to 'images'.
        count (callable, optional): Units in one item (e.g. a batch's size). Defaults to one per item.
    """
    progress = PassProgress(total, task, unit)
    for item in items:
        yield item
        progress.update(count(item) if count is not None else 1)
    progress.finish()
