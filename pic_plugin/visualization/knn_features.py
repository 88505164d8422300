"""The kNN features of a bounded subset of a ``KNNSplits`` data set, collected from the model's ``val_step``.

The feature pictures (``feature_pictures.py``) need the features that the weighted-kNN evaluation uses: the
feature that ``InstanceClassification.predict`` stores as ``knn_feature`` on every data sample (the pooled
backbone feature or the normalised projection, by ``model.knn_feature``), with its ``gt_label`` and
``knn_split``. ``KNNFeatureCollector`` keeps them for an evenly spaced subset of at most ``max_points`` images (a
2-D map of 1.28M points is neither computable nor readable) and gathers them from all ranks.

Example:
    >>> collector = KNNFeatureCollector(knn_splits_dataset, max_points=2000)
    >>> for data_batch in loader:
    ...     collector.add(model.val_step(data_batch))
    >>> features = collector.gather()  # on every rank; KNNFeatures of the subset
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import all_gather_object
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from pic_plugin.datasets.knn_splits import KNNSplits


class KNNFeatures(NamedTuple):
    """Features of the collected images, ordered by their index in the ``KNNSplits`` data set.

    Attributes:
        features (Tensor): (N, D) float32 kNN features on the CPU.
        labels (Tensor | None): (N,) long labels, or None when some image has no ``gt_label``.
        is_test (Tensor): (N,) bool, True for the held-out ("test") images, False for the reference ones.
        indices (Tensor): (N,) long index of every image in the ``KNNSplits`` data set.
    """

    features: Tensor
    labels: Optional[Tensor]
    is_test: Tensor
    indices: Tensor


def evenly_spaced(num_items: int, num_kept: int) -> np.ndarray:
    """``min(num_items, num_kept)`` distinct indices spread evenly over ``0 .. num_items - 1``, first and last included.

    Args:
        num_items (int): Length of what is indexed.
        num_kept (int): How many indices to return at most.

    Returns:
        np.ndarray: Sorted int64 indices.
    """
    num_kept = min(num_items, num_kept)
    if num_kept == 1:
        return np.zeros(1, dtype=np.int64)
    return np.linspace(0, num_items - 1, num_kept).round().astype(np.int64)  # steps >= 1, so distinct


class KNNFeatureCollector:
    """Keep the kNN features of an evenly spaced subset of a ``KNNSplits`` data set, from ``val_step`` outputs.

    Each split gets its share of ``max_points``: ``round(max_points * len(split) / len(dataset))`` images, spread
    evenly over the split (the folder layouts of mmpretrain sort images by class, so every class is met). A data
    set of at most ``max_points`` images is kept whole.

    Args:
        dataset (KNNSplits): The validation data set the features come from.
        max_points (int): Most images kept. Defaults to 2000.
    """

    def __init__(self, dataset: KNNSplits, max_points: int = 2000) -> None:
        if not isinstance(dataset, KNNSplits):
            raise ValueError(f'the kNN feature pictures need a KNNSplits validation data set, got '
                             f'{type(dataset).__name__}; set val_dataloader.dataset=dict(type=\'KNNSplits\', '
                             'train=..., test=...).')
        if max_points < 2:
            raise ValueError(f'max_points={max_points} must be at least 2 (a reference and a test image).')
        num_train, num_test = len(dataset.train), len(dataset.test)
        if num_train == 0 or num_test == 0:
            raise ValueError(f'the KNNSplits data set has {num_train} reference and {num_test} test images; the '
                             'pictures need both splits non-empty.')
        train_share = min(num_train, max(1, round(max_points * num_train / (num_train + num_test))))
        test_share = min(num_test, max(1, max_points - train_share))
        self.num_train = num_train
        self.positions = np.concatenate([evenly_spaced(num_train, train_share),
                                         num_train + evenly_spaced(num_test, test_share)])
        self._kept = set(self.positions.tolist())
        self._records: Dict[int, Tuple[Tensor, Optional[int]]] = {}

    def add(self, data_samples: Sequence[DataSample]) -> None:
        """Keep the feature and label of every sample of a batch that belongs to the subset.

        Args:
            data_samples (Sequence[DataSample]): ``model.val_step`` outputs, each with ``knn_feature``,
                ``knn_split`` and ``sample_idx`` (and ``gt_label`` when the data set has labels).
        """
        for sample in data_samples:
            if 'knn_feature' not in sample or sample.metainfo.get('knn_split') not in ('train', 'test'):
                raise ValueError(f'the kNN feature pictures need knn_feature and knn_split on every sample, got '
                                 f'fields {sorted(sample.keys())}; use a model whose predict() stores '
                                 'knn_feature (InstanceClassification) on a KNNSplits data set.')
            index = int(sample.sample_idx) + (self.num_train if sample.knn_split == 'test' else 0)
            if index in self._kept:
                label = int(sample.gt_label) if 'gt_label' in sample else None
                self._records[index] = (sample.knn_feature.detach().to('cpu', torch.float32), label)

    def gather(self) -> KNNFeatures:
        """The kept features of all ranks, each image once (the sampler's padding repeats some).

        Every rank must call it (it is a collective operation) and gets the same result.

        Returns:
            KNNFeatures: The collected images, sorted by data set index.
        """
        records: Dict[int, Tuple[Tensor, Optional[int]]] = {}
        for part in all_gather_object(self._records):
            records.update(part)
        if not records:
            raise ValueError('no kNN feature was collected; run the model\'s val_step over the validation '
                             'loader and pass its outputs to add() first.')
        indices = sorted(records)
        labels: List[Optional[int]] = [records[index][1] for index in indices]
        return KNNFeatures(
            features=torch.stack([records[index][0] for index in indices]),  # (N, D)
            labels=None if None in labels else torch.tensor(labels, dtype=torch.long),
            is_test=torch.tensor([index >= self.num_train for index in indices]),
            indices=torch.tensor(indices, dtype=torch.long))


def swaps_channels(data_preprocessor: nn.Module) -> bool:
    """Whether the model's data preprocessor swaps the pipeline's BGR channels to RGB (``to_rgb=True``).

    Args:
        data_preprocessor (nn.Module): The model's ``data_preprocessor``, e.g. mmpretrain's
            ``SelfSupDataPreprocessor``; mmengine's ``ImgDataPreprocessor`` keeps the flag as
            ``_channel_conversion``.
    """
    return bool(getattr(data_preprocessor, '_channel_conversion', False))


def display_image(dataset: KNNSplits, index: int, bgr_to_rgb: bool) -> np.ndarray:
    """Image ``index`` of the data set as its pipeline hands it to the model, as an RGB ``uint8`` array.

    Args:
        dataset (KNNSplits): The validation data set.
        index (int): Index of the image in the data set.
        bgr_to_rgb (bool): Whether the pipeline's channels are BGR (mmcv's loader) and the model's data
            preprocessor swaps them (:func:`swaps_channels`), so that they must be swapped for display too.

    Returns:
        np.ndarray: (H, W, 3) uint8 image.
    """
    inputs = dataset[index]['inputs']
    image = (inputs[0] if isinstance(inputs, (list, tuple)) else inputs).permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
    image = image.clamp(0, 255).to(torch.uint8).numpy()
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., ::-1]) if bgr_to_rgb else image
