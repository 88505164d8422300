"""The one-branch instance-classification algorithm shared by PIC, the full classifier and NPID."""
import itertools
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..heads.instance_cls_head import InstanceClsHead

KNN_FEATURES = ('backbone', 'projection')


@MODELS.register_module()
class InstanceClassification(BaseSelfSupervisor):
    """One view per image, backbone -> neck -> head, and the image's index in the data set as its class.

    This is PIC's framework (PIC Sec. 2.1, Fig. 1): unlike SimCLR or MoCo there is no second branch, so a step
    costs one forward and one backward pass. The head decides the loss: ``InstanceClsHead`` for PIC and the
    full classifier, ``MemoryBankNCE`` for NPID. The label of an image is the ``sample_idx`` that mmengine's
    datasets attach to every sample and mmpretrain's ``PackInputs`` keeps in the data sample's metainfo.

    In ``'predict'`` mode the model returns the data samples with a feature stored as ``knn_feature``, which
    the ``WeightedKNN`` metric evaluates: the globally pooled last-stage backbone feature (``'backbone'``, what a
    linear probe or a downstream task receives), or the L2-normalised projection the head is trained on
    (``'projection'``: NPID Sec. 3.4 votes with the 128-d embedding).

    Multi-crop (``num_large_views``; the public PIC release, https://github.com/bl0/PIC, ``contrast/models/PIC.py``
    and ``scripts/PIC.sh``, not the paper): each image comes as ``V_l`` large crops and ``V_s`` small ones (the
    release: 1 x 160 px at scale 0.14-1 and 3 x 96 px at scale 0.08-0.14; 68.6% linear top-1 at 200 epochs
    against the paper's 67.3%). The small crops' logits use a detached copy of the rows the large crops' step
    selects, so only the large crops train the classifier (one PIC Eq. 2 update per row and step, as the lazy
    correction assumes); the small crops still train the backbone and the neck. Views of one size go through the
    network as one batch (the large crops, then the small ones), so the small crops share their BatchNorm
    statistics (the release runs each crop separately). The loss is the mean over every crop of every image,
    ``(V_l * L_large + V_s * L_small) / (V_l + V_s)`` with each ``L`` the mean over its crops: the release's one
    cross-entropy over the concatenated logits. The rows' gradient is then ``V_l / (V_l + V_s)`` of a
    single-crop step's (1/4 for 1 + 3 crops), as in the release.

    Args:
        backbone (dict): Backbone config, e.g. ``dict(type='ResNet', depth=50)``.
        neck (dict): Projection head config, e.g. mmpretrain's ``NonLinearNeck`` (2-layer MLP, PIC Table 1).
        head (dict): Loss head config: ``InstanceClsHead`` or ``MemoryBankNCE``.
        knn_feature (str): What ``'predict'`` mode evaluates: ``'backbone'`` or ``'projection'`` (see above).
            Defaults to 'backbone'.
        num_large_views (int, optional): Multi-crop (see above): the first ``num_large_views`` views of each image
            (``MultiView``'s first pipeline) are the large crops, the rest the small ones. Needs
            ``InstanceClsHead``. None treats every view alike (PIC's one view, the full classifier's two).
            Defaults to None.
        channels_last (bool): Keep the convolution weights and the images in the channels-last memory format
            (faster convolutions on recent GPUs and CPUs with AMX / AVX-512). Defaults to False.
        data_preprocessor (dict, optional): Defaults to mmpretrain's ``SelfSupDataPreprocessor``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 knn_feature: str = 'backbone',
                 num_large_views: Optional[int] = None,
                 channels_last: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if knn_feature not in KNN_FEATURES:
            raise ValueError(f'knn_feature={knn_feature!r} is not one of {KNN_FEATURES}: set model.knn_feature to '
                             "'backbone' (the pooled backbone feature) or 'projection' (NPID's embedding).")
        if num_large_views is not None and num_large_views < 1:
            raise ValueError(f'num_large_views={num_large_views} must be at least 1 (the PIC release uses 1 large '
                             'crop), or None for no multi-crop.')
        super().__init__(backbone=backbone, neck=neck, head=head, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if num_large_views is not None and not isinstance(self.head, InstanceClsHead):
            raise ValueError(f'num_large_views={num_large_views} (multi-crop) scores the small crops against the '
                             f'classifier rows detached, which InstanceClsHead does; the head is '
                             f'{type(self.head).__name__}: set model.num_large_views=None.')
        self.knn_feature = knn_feature
        self.num_large_views = num_large_views
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=torch.channels_last)  # the 4-d weights; Module.to(device) keeps their strides

    def init_weights(self) -> None:
        """mmengine's initialisation, drawn in the contiguous format: random fills follow memory order, so
        channels-last weights would get other values than the same config trains with contiguously."""
        self.to(memory_format=torch.contiguous_format)
        super().init_weights()
        self.to(memory_format=self.memory_format)

    def forward(self,
                inputs: Union[Tensor, List[Tensor]],
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        """Adds mmengine's ``'predict'`` mode (used by the validation loop) to the base class's modes."""
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)

    def train_step(self, data: Union[dict, tuple, list], optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        """mmengine's ``BaseModel.train_step`` (preprocess, forward, parse, update), with two differences:

        * it refuses an optimiser wrapper that would leave the instance rows untrained (e.g. a plain
          ``AmpOptimWrapper`` that ``--amp`` put in place of ``LazyCorrectedSGD``);
        * the data preprocessor runs eagerly under ``torch.compile`` (mmengine's ``compile=True`` compiles this
          method): it copies each sample's metainfo, whose strings would make every batch recompile.
        """
        if getattr(self.head, 'rows', None) is not None and not getattr(optim_wrapper, 'trains_instance_rows', False):
            raise TypeError(
                f'optim_wrapper is {type(optim_wrapper).__name__}, which does not train the instance rows of '
                f"{type(self.head).__name__} (PIC Eq. 2-3): set optim_wrapper=dict(type='OptimWrapper', "
                "constructor='LazyCorrectedSGDConstructor', optimizer=dict(type='SGD', ...)) in the config; with "
                "it, --amp (type='AmpOptimWrapper') keeps the row update.")
        with optim_wrapper.optim_context(self):
            data = self._preprocess(data)
            losses = self._run_forward(data, mode='loss')
        parsed_losses, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(parsed_losses)
        return log_vars

    @torch.compiler.disable
    def _preprocess(self, data: Union[dict, tuple, list]) -> Union[dict, list]:
        return self.data_preprocessor(data, True)

    def loss(self, inputs: List[Tensor], data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """Project every view of each image and classify it as its own instance.

        PIC feeds one view per image; the full classifier feeds two "for fair comparison" with two-branch
        methods (its Sec. 4). All views go through the network as one batch and share their image's label; with
        ``num_large_views`` set, :meth:`multi_crop_loss` does instead.

        Args:
            inputs (list[Tensor]): ``V`` views from ``SelfSupDataPreprocessor``, each ``(B, C, H, W)``.
            data_samples (list[DataSample]): One per image, each with ``sample_idx`` in its metainfo.

        Returns:
            dict[str, Tensor]: The head's losses.
        """
        views = self.views(inputs)
        if self.num_large_views is not None:
            return self.multi_crop_loss(views, data_samples)
        images = torch.cat(views)  # (V * B, C, H, W)
        # on the host, where the head decides each step's rows (no value is read back from the GPU)
        labels = self.instance_labels(data_samples, torch.device('cpu')).repeat(len(views))  # (V * B,)
        return self.head.loss(self.project(images), labels)  # (V * B, D), (V * B,)

    def multi_crop_loss(self, views: List[Tensor], data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """The PIC release's multi-crop: the large crops train the rows, the small ones score against them detached.

        Args:
            views (list[Tensor]): ``V_l`` large crops ``(B, C, H, W)``, then the small ones ``(B, C, h, w)``.
            data_samples (list[DataSample]): One per image, each with ``sample_idx`` in its metainfo.

        Returns:
            dict[str, Tensor]: The head's loss, the mean over all crops (see the class docstring).

        Raises:
            ValueError: If there are fewer views than ``num_large_views``.
        """
        if len(views) < self.num_large_views:
            raise ValueError(f'got {len(views)} views per image for num_large_views={self.num_large_views}: the '
                             "train pipeline's MultiView must give the large crops first, e.g. num_views=[1, 3].")
        large, small = views[:self.num_large_views], views[self.num_large_views:]
        labels = self.instance_labels(data_samples, torch.device('cpu'))  # (B,) on the host, as in loss
        large_feats = self.project_views(large)  # (V_l * B, D)
        if not small:
            return self.head.loss(large_feats, labels.repeat(len(large)))
        return self.head.loss(large_feats, labels.repeat(len(large)),
                              detached_feats=self.project_views(small),  # (V_s * B, D)
                              detached_sample_idx=labels.repeat(len(small)))  # (V_s * B,)

    def project(self, images: Tensor) -> Tensor:
        """Backbone, then neck: the ``(B, D)`` projected features the head classifies."""
        return self.neck(self.backbone(images.contiguous(memory_format=self.memory_format)))[0]

    def project_views(self, views: List[Tensor]) -> Tensor:
        """Project views that may differ in size: each run of views of one size is one batch, ``(V * B, D)``."""
        groups = [list(group) for _, group in itertools.groupby(views, key=lambda view: view.shape[2:])]
        return torch.cat([self.project(torch.cat(group)) for group in groups])  # view after view

    @staticmethod
    def views(inputs: Union[Tensor, List[Tensor]]) -> List[Tensor]:
        """The views of a preprocessed batch as a list of ``(B, C, H, W)`` tensors (one or several per image)."""
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    @staticmethod
    @torch.compiler.disable  # built from Python ints: traced, every batch would recompile
    def instance_labels(data_samples: List[DataSample], device: torch.device) -> Tensor:
        """The instance class of every sample: its ``sample_idx`` in the training set, ``(B,)``.

        Raises:
            ValueError: If a sample carries no ``sample_idx``.
        """
        labels = []
        for position, sample in enumerate(data_samples):
            if 'sample_idx' not in sample.metainfo:
                raise ValueError(
                    f'sample {position} of the batch has no sample_idx (metainfo keys: {sorted(sample.metainfo)}): '
                    "instance classification uses it as the label. Use a dataset derived from mmengine's "
                    "BaseDataset (it sets sample_idx) and keep 'sample_idx' in PackInputs' meta_keys.")
            labels.append(int(sample.metainfo['sample_idx']))
        return torch.tensor(labels, dtype=torch.long, device=device)

    @torch.no_grad()
    def predict(self, inputs: List[Tensor], data_samples: List[DataSample]) -> List[DataSample]:
        """Store each image's pooled backbone feature, or its normalised projection, as ``knn_feature``."""
        images = self.views(inputs)[0]
        if self.knn_feature == 'projection':
            features = F.normalize(self.project(images), dim=1)  # (B, D)
        else:
            feature_map = self.backbone(images.contiguous(memory_format=self.memory_format))[-1]  # (B, C, H, W)
            features = feature_map.mean(dim=(2, 3)) if feature_map.dim() == 4 else feature_map  # (B, C)
        for sample, feature in zip(data_samples, features):
            sample.set_field(feature, 'knn_feature')
        return data_samples
