"""Convert a checkpoint saved by pic_plugin before 2026-12-01 to the layout of the redesigned instance rows.

    python tools/model_converters/upgrade_checkpoint.py OLD.pth NEW.pth

What changed: the classifier's rows moved from ``head.table.*`` to ``head.rows.*`` (``LazySGDRows``), the recent
negatives' FIFO from ``head.recent_*`` to ``head.negatives.recent_*``, and the per-step SGD transitions of the
lazy correction (PIC Eq. 3) from the optimiser state (``optimizer['lazy_correction']``) into the model as
``head.rows.transitions``, next to the ``last_step`` of every row they are matched with. Nothing is recomputed:
NEW resumes (``--resume NEW.pth``) exactly where OLD would have. NPID checkpoints (``head.bank.weight``) need no
conversion; the tool says so and writes nothing.
"""
import argparse
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from pic_plugin.utils import allow_mmengine_checkpoints

RENAMED_PREFIXES = {'head.table.': 'head.rows.', 'head.recent_indices': 'head.negatives.recent_indices',
                    'head.recent_head': 'head.negatives.recent_head'}
OLD_OPTIMIZER_KEY = 'lazy_correction'
TRANSITIONS_KEY = 'head.rows.transitions'


def upgrade(checkpoint: dict, path: Path) -> dict:
    """The checkpoint in the new layout (a new dict; tensors are shared, not copied).

    Raises:
        ValueError: If it is already in the new layout, holds no instance rows, or holds rows without the
            transitions they need.
    """
    state_dict: Dict[str, Tensor] = checkpoint.get('state_dict', checkpoint)
    if TRANSITIONS_KEY in state_dict:
        raise ValueError(f'{path} is already in the new layout (it holds {TRANSITIONS_KEY}): use it as it is.')
    if not any(key.startswith('head.table.') for key in state_dict):
        raise ValueError(f'{path} holds no head.table.* rows: only PIC and full-classifier checkpoints of pic_plugin '
                         'before 2026-12-01 need converting (NPID banks kept their keys).')
    optimizer = dict(checkpoint.get('optimizer') or {})
    if OLD_OPTIMIZER_KEY not in optimizer:
        raise ValueError(f'{path} has rows but no optimizer[{OLD_OPTIMIZER_KEY!r}]: the transitions that bring '
                         'its rows forward are lost (a weights-only export). Use the training checkpoint written '
                         'to the work dir (e.g. epoch_200.pth), or load these rows with load_from, not resume.')
    renamed = {}
    for key, value in state_dict.items():
        old = next((prefix for prefix in RENAMED_PREFIXES if key.startswith(prefix)), None)
        renamed[RENAMED_PREFIXES[old] + key[len(old):] if old else key] = value
    renamed[TRANSITIONS_KEY] = optimizer.pop(OLD_OPTIMIZER_KEY)['transitions']
    if 'state_dict' not in checkpoint:
        return renamed
    return {**checkpoint, 'state_dict': renamed, 'optimizer': optimizer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('old', type=Path, help='checkpoint saved by pic_plugin before 2026-12-01')
    parser.add_argument('new', type=Path, help='where to write the converted checkpoint (must not exist)')
    args = parser.parse_args()
    if args.new.exists():
        raise SystemExit(f'{args.new} exists: give a new path (the tool never overwrites a checkpoint).')
    allow_mmengine_checkpoints()
    checkpoint = torch.load(args.old, map_location='cpu', weights_only=True)
    try:
        upgraded = upgrade(checkpoint, args.old)
    except ValueError as error:
        raise SystemExit(str(error))
    torch.save(upgraded, args.new)
    print(f'wrote {args.new}: head.table.* -> head.rows.*, head.recent_* -> head.negatives.recent_*, '
          f"optimizer['{OLD_OPTIMIZER_KEY}'] -> {TRANSITIONS_KEY}")


if __name__ == '__main__':
    main()
