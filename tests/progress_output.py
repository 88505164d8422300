"""Capture what a pass shows and logs: its progress bar on ``sys.stdout`` and mmengine's current logger."""
import io
import logging
from contextlib import contextmanager, redirect_stdout
from typing import Iterator

from mmengine.logging import MMLogger


@contextmanager
def captured_progress() -> Iterator[io.StringIO]:
    """Within the block, ``sys.stdout`` and the records of mmengine's current logger go to the yielded buffer.

    Also works in the processes that ``distributed.run_distributed`` spawns, where pytest's capture fixtures do
    not reach. Create the logger a test uses (e.g. its Runner) before entering the block.
    """
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        with redirect_stdout(text):
            yield text
    finally:
        logger.removeHandler(handler)
