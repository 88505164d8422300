"""The one-branch instance-classification algorithm shared by PIC, the full classifier and NPID."""
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample


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

    Args:
        backbone (dict): Backbone config, e.g. ``dict(type='ResNet', depth=50)``.
        neck (dict): Projection head config, e.g. mmpretrain's ``NonLinearNeck`` (2-layer MLP, PIC Table 1).
        head (dict): Loss head config: ``InstanceClsHead`` or ``MemoryBankNCE``.
        knn_feature (str): What ``'predict'`` mode evaluates: ``'backbone'`` or ``'projection'`` (see above).
            Defaults to 'backbone'.
        data_preprocessor (dict, optional): Defaults to mmpretrain's ``SelfSupDataPreprocessor``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 knn_feature: str = 'backbone',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if knn_feature not in KNN_FEATURES:
            raise ValueError(f'knn_feature={knn_feature!r} is not one of {KNN_FEATURES}: set model.knn_feature to '
                             "'backbone' (the pooled backbone feature) or 'projection' (NPID's embedding).")
        super().__init__(backbone=backbone, neck=neck, head=head, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self.knn_feature = knn_feature

    def forward(self,
                inputs: Union[Tensor, List[Tensor]],
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        """Adds mmengine's ``'predict'`` mode (used by the validation loop) to the base class's modes."""
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)

    def loss(self, inputs: List[Tensor], data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """Project every view of each image and classify it as its own instance.

        PIC feeds one view per image; the full classifier feeds two "for fair comparison" with two-branch
        methods (its Sec. 4). All views go through the network as one batch and share their image's label.

        Args:
            inputs (list[Tensor]): ``V`` views from ``SelfSupDataPreprocessor``, each ``(B, C, H, W)``.
            data_samples (list[DataSample]): One per image, each with ``sample_idx`` in its metainfo.

        Returns:
            dict[str, Tensor]: The head's losses.
        """
        views = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        images = torch.cat(views)  # (V * B, C, H, W)
        labels = self.instance_labels(data_samples, images.device).repeat(len(views))  # (V * B,)
        projections = self.neck(self.backbone(images))[0]  # (V * B, D)
        return self.head.loss(projections, labels)

    @staticmethod
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
        images = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        if self.knn_feature == 'projection':
            features = F.normalize(self.neck(self.backbone(images))[0], dim=1)  # (B, D)
        else:
            feature_map = self.backbone(images)[-1]  # (B, C, H, W)
            features = feature_map.mean(dim=(2, 3)) if feature_map.dim() == 4 else feature_map  # (B, C)
        for sample, feature in zip(data_samples, features):
            sample.set_field(feature, 'knn_feature')
        return data_samples
