"""PIC's parametric instance classifier: a cosine soft-max over one row per training image."""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather, get_dist_info
from mmengine.model import BaseModule
from torch import Tensor

from mmpretrain.registry import MODELS
from ..utils.row_table import RowTable

NEGATIVE_MODES = ('full', 'recent')


@MODELS.register_module()
class InstanceClsHead(BaseModule):
    """Cosine soft-max instance classifier (PIC Eq. 1).

    Every training image ``i`` is its own class with a weight row ``w_i``. For a projected feature ``z_i``,

    .. math::
        L = -\\frac{1}{|B|}\\sum_{i \\in B} \\log
            \\frac{\\exp(\\cos(w_i, z_i) / \\tau)}{\\sum_{j \\in \\mathcal{N}} \\exp(\\cos(w_j, z_i) / \\tau)}

    where the denominator runs over all ``N`` rows (``negatives='full'``), or only over the rows of the
    ``num_negatives`` most recent positives plus the batch's own (``negatives='recent'``, PIC Sec. 2.3). The rows
    live in a :class:`RowTable`; the rows a step uses are gathered, brought to the current step and updated by
    ``LazyCorrectedSGD``, so the cost of a step does not grow with ``N`` in the recent mode.

    Example (plain PyTorch, one process)::

        head = InstanceClsHead(num_classes=1000, in_channels=128)
        optim = LazyCorrectedSGD(torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4))
        loss = head.loss(z, sample_idx)['loss']   # z: (B, 128), sample_idx: (B,)
        optim.update_params(loss)

    Args:
        num_classes (int): Number of instance classes: the size of the training set.
        in_channels (int): Length ``D`` of the projected features and of each row. Defaults to 128.
        temperature (float): Temperature ``tau`` of the cosine soft-max. Defaults to 0.2 (PIC Sec. 3.1).
        negatives (str): ``'full'`` (all rows in every step) or ``'recent'`` (recent-negative sampling).
            Defaults to 'full'.
        num_negatives (int): ``K``, the number of recent positives kept as negatives when
            ``negatives='recent'``. Defaults to 65536 (PIC Sec. 3.1).
        init_std (float): Standard deviation of the rows' normal initialisation, as the PIC release
            (small rows learn fast under a cosine loss; see ``RowTable``). Defaults to 0.01.
        placement (str): ``'device'`` or ``'host'``: where the table lives (see ``RowTable``).
            Defaults to 'device'.
        init_cfg (dict, optional): Initialisation config of the module. Defaults to None.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int = 128,
                 temperature: float = 0.2,
                 negatives: str = 'full',
                 num_negatives: int = 65536,
                 init_std: float = 0.01,
                 placement: str = 'device',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f'negatives={negatives!r} is not one of {NEGATIVE_MODES}.')
        if temperature <= 0:
            raise ValueError(f'temperature={temperature} must be positive (PIC uses 0.2).')
        if negatives == 'recent' and not 0 < num_negatives <= num_classes:
            raise ValueError(f'num_negatives={num_negatives} must lie in [1, num_classes={num_classes}]: lower it '
                             "for a small data set, or use negatives='full'.")
        self.num_classes = num_classes
        self.temperature = temperature
        self.negatives = negatives
        self.table = RowTable(num_classes, in_channels, init_std=init_std, placement=placement)
        if negatives == 'recent':
            # FIFO of the most recent positives; -1 marks an empty slot (the start of training).
            self.register_buffer('recent_indices', torch.full((num_negatives, ), -1, dtype=torch.long))
            self.register_buffer('recent_head', torch.zeros((), dtype=torch.long))

    def loss(self, feats: Tensor, sample_idx: Tensor) -> Dict[str, Tensor]:
        """Cosine soft-max loss of a batch.

        Args:
            feats (Tensor): ``(B, D)`` projected features.
            sample_idx (Tensor): ``(B,)`` instance labels: the images' indices in the training set.

        Returns:
            dict[str, Tensor]: ``{'loss': ...}``.
        """
        sample_idx = sample_idx.to(feats.device)
        self.table.to_local(sample_idx)  # validates the range with an error that says what to change
        self.table.place_on(feats.device)
        if self.negatives == 'full':
            class_indices = torch.arange(self.num_classes, device=feats.device)
            targets = sample_idx
        else:
            class_indices, targets = self._recent_classes(sample_idx)
        rows = self.table.rows_for_update(self.table.to_local(class_indices), feats.device)  # (C, D)
        logits = F.normalize(feats, dim=1) @ F.normalize(rows, dim=1).t() / self.temperature  # (B, D) x (D, C)
        return dict(loss=F.cross_entropy(logits, targets))

    @torch.no_grad()
    def _recent_classes(self, sample_idx: Tensor):
        """Classes of this step in the recent mode: the batch's own plus the ``K`` most recent positives.

        Every rank sees the same classes (the batch indices are gathered over ranks), so the replicated rows
        and their averaged gradients stay identical everywhere. The gathered batch then enters the FIFO.

        Returns:
            tuple[Tensor, Tensor]: sorted unique global class indices ``(C,)`` and each sample's target
            position among them ``(B,)``.
        """
        _, world_size = get_dist_info()
        global_batch = torch.cat(all_gather(sample_idx)) if world_size > 1 else sample_idx
        recent = self.recent_indices[self.recent_indices >= 0]
        class_indices = torch.unique(torch.cat([global_batch, recent]))  # sorted
        targets = torch.searchsorted(class_indices, sample_idx)
        self._enqueue(global_batch)
        return class_indices, targets

    def _enqueue(self, indices: Tensor) -> None:
        capacity = self.recent_indices.numel()
        indices = indices[-capacity:]
        slots = (self.recent_head + torch.arange(indices.numel(), device=indices.device)) % capacity
        self.recent_indices[slots] = indices
        self.recent_head.copy_((self.recent_head + indices.numel()) % capacity)
