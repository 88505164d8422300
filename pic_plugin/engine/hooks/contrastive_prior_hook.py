"""Initialise the instance classifier with the random network's own features (the full classifier's prior)."""
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from pic_plugin.models.utils.gather import all_gather_rows
from pic_plugin.models.utils.row_storage import RowStorage, first_occurrences
from pic_plugin.utils.progress import track_progress
from .utils import compute_device, instance_head, loader_batch_size, unwrapped_model


@contextmanager
def batch_norm_only_in_train_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode except BatchNorm layers (which update their running statistics).

    Each module's own ``training`` flag is restored on exit, whatever mode it was in.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.train()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@HOOKS.register_module()
class ContrastivePriorHook(Hook):
    """Before the first step, write each image's projected feature into its classifier row.

    Liu et al. (Sec. 3, "A contrastive prior"): "before training started, we run an inference epoch using the
    fixed random initial network with running BNs to extract all instance features; then we directly assign
    them to classification weights as an initialization." Every BatchNorm layer runs in training mode, so each
    batch is normalised by its own statistics (and the running statistics update), which subtracts an average
    of other instances from every feature: the paper's contrastive prior. No gradient is computed and no
    weight other than the BatchNorm running statistics and the classifier rows changes.

    The pass reads the training set once, in order, each rank its share (mmengine's ``DefaultSampler`` with
    ``shuffle=False``), through the training pipeline (its augmentation included) and the training batch
    size; the first view of each image is used. The projections (backbone -> neck) are gathered from all
    ranks, and each rank writes the rows it owns (all of them unless the table is sharded), once per image.
    The rows get zero momentum as of the current step (``LazySGDRows.assign``). Rank 0 shows
    the pass's progress (images of all ranks, rate, ETA) and logs its duration.

    It runs only when training starts from iteration 0: a resumed run (``runner.iter > 0`` after the
    checkpoint is loaded) keeps the checkpoint's rows. With ``load_from`` (weights only) it runs, with the
    loaded network.

    Row norm: the paper assigns the features as they are (``row_norm=None``, the default). The cosine
    soft-max sees only a row's direction, but its norm sets how fast the row learns: an SGD step turns a row
    by about ``lr * |g| / |w|^2``, so rows of norm 1 learn about 80x slower than the 0.11-norm rows of PIC's
    Gaussian init (the public PIC release's N(0, 0.01^2) rows), and the raw
    projections of a random MLP head are usually larger still. A number L2-normalises every feature and scales
    it to that norm: ``row_norm=0.113`` (= 0.01 x sqrt(128)) keeps the prior's directions with the learning
    speed of the Gaussian init.

    Example::

        custom_hooks = [dict(type='ContrastivePriorHook', row_norm=None)]

    Args:
        row_norm (float, optional): Norm of every written row; None writes the features unscaled (the paper).
            Defaults to None.
        dataloader (dict, optional): Overrides of the pass's loader, e.g. ``dict(batch_size=512,
            num_workers=8)``, merged over those taken from the training loader. Defaults to None.
    """

    priority = 'NORMAL'

    def __init__(self, row_norm: Optional[float] = None, dataloader: Optional[dict] = None) -> None:
        if row_norm is not None and row_norm <= 0:
            raise ValueError(f'row_norm={row_norm} must be positive, or None to write the features unscaled.')
        self.row_norm = row_norm
        self.dataloader = dict(dataloader or {})

    def before_train(self, runner) -> None:
        if runner.iter > 0:
            runner.logger.info(f'ContrastivePriorHook: training resumes at iteration {runner.iter}; the '
                               'classifier rows come from the checkpoint.')
            return
        model = unwrapped_model(runner)
        head = instance_head(model, type(self).__name__)
        table = head.rows
        device = compute_device(model, head)
        written = torch.zeros(table.num_local_rows, dtype=torch.bool, device=device)
        feature_norms = []
        loader = self._sequential_loader(runner)
        world_size = get_world_size()  # every rank reads as many batches, of the same sizes
        batches = track_progress(loader, len(loader.sampler) * world_size, 'contrastive prior',
                                 count=lambda batch: len(batch['data_samples']) * world_size)
        with torch.no_grad(), batch_norm_only_in_train_mode(model):
            for data_batch in batches:
                data = model.data_preprocessor(data_batch, False)
                features = model.project(model.views(data['inputs'])[0])  # first view: (B, C, H, W) -> (B, D)
                feature_norms.append(features.norm(dim=1))
                labels = model.instance_labels(data['data_samples'], features.device)
                self._write_rows(table, features, labels, written)
        num_written = int(written.sum())
        scale = 'unscaled' if self.row_norm is None else f'scaled to norm {self.row_norm}'
        runner.logger.info(f'ContrastivePriorHook: {num_written} of this rank\'s {table.num_local_rows} classifier '
                           f'rows now hold the random network\'s features (mean norm '
                           f'{float(torch.cat(feature_norms).mean()):.3f}), {scale}.')
        if num_written < table.num_local_rows:
            runner.logger.warning(f'ContrastivePriorHook: {table.num_local_rows - num_written} rows met no image '
                                  'and keep their random initialisation.')

    def _sequential_loader(self, runner) -> DataLoader:
        """The training set in order, each rank its share, with the training loader's dataset and collate."""
        train_loader = runner.train_dataloader
        config = dict(dataset=train_loader.dataset, sampler=dict(type='mmpretrain.KeyedDefaultSampler', shuffle=False),
                      batch_size=loader_batch_size(train_loader), num_workers=train_loader.num_workers,
                      collate_fn=train_loader.collate_fn)
        config.update(self.dataloader)
        return runner.build_dataloader(config, seed=runner.seed)

    def _write_rows(self, table: RowStorage, features: Tensor, labels: Tensor, written: Tensor) -> None:
        """Write the rows this rank owns among the batches of all ranks; each row once (the first image)."""
        if self.row_norm is not None:
            features = F.normalize(features, dim=1) * self.row_norm
        if features.shape[1] != table.dim:
            raise ValueError(f'the neck projects to {features.shape[1]} dimensions but the classifier rows have '
                             f'{table.dim}: set model.head.in_channels to the neck\'s out_channels.')
        features, labels = all_gather_rows(features), all_gather_rows(labels)  # (B_all, D), (B_all,)
        local = labels - table.row_offset
        owned = (local >= 0) & (local < table.num_local_rows)
        local, features = local[owned], features[owned]
        # the sampler pads every rank to the same length by repeating images: keep each row's first image
        rows, first_image = first_occurrences(local)
        new = ~written[rows]
        rows, first_image = rows[new], first_image[new]
        written[rows] = True
        table.assign(rows, features[first_image])  # (R, D); zero momentum as of the current step
