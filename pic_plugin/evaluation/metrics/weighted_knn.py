"""Weighted k-nearest-neighbour evaluation of NPID (Wu et al. 2018, Sec. 3.4).

A test feature f is compared with every training feature v_i by cosine similarity s_i = cos(v_i, f).
Its k nearest neighbours N_k vote for their classes, neighbour i with weight alpha_i = exp(s_i / tau):

    w_c = sum_{i in N_k} alpha_i * 1(c_i = c)          (NPID Sec. 3.4, k = 200, tau = 0.07)

and the classes are ranked by w_c. ``weighted_knn_classify`` computes the votes with plain tensors;
``WeightedKNN`` is the mmengine metric that collects features during a validation loop over
``KNNSplits`` (``pic_plugin/datasets/knn_splits.py``) and reports top-1 / top-5 accuracy.

Tie rules (the same on every device, unlike ``torch.topk``'s choice among equal values):
    * neighbours tied at the k-th largest similarity: the lower training index is kept;
    * classes tied in votes: the lower class index ranks first.

Example:
    >>> scores = weighted_knn_classify(train_features, train_labels, test_features,
    ...                                num_classes=1000)
    >>> top1, top5 = topk_accuracy(scores, test_labels, topk=(1, 5))
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.structures import BaseDataElement
from mmpretrain.registry import METRICS
from torch import Tensor

__all__ = ['WeightedKNN', 'nearest_neighbours', 'weighted_knn_classify', 'top_classes', 'topk_accuracy']


def weighted_knn_classify(train_features: Tensor,
                          train_labels: Tensor,
                          test_features: Tensor,
                          num_classes: int,
                          k: int = 200,
                          tau: float = 0.07,
                          chunk_size: int = 256) -> Tensor:
    """Class votes of the weighted kNN classifier (NPID Sec. 3.4) for every test feature.

    Features are L2-normalised here, so any scale is accepted. Test rows are processed
    ``chunk_size`` at a time, so the largest intermediate is a ``(chunk_size, N_train)``
    similarity matrix: 1.28M ImageNet training features never need an ``N_test x N_train`` matrix.
    Computation runs on the device of ``train_features`` in float32.

    The returned votes are the paper's w_c divided by exp(s_max / tau), where s_max is the test
    row's largest similarity: one positive factor per row, so the class ranking is exactly the
    paper's, while exp never overflows however small tau is (the top neighbour weighs 1).

    Args:
        train_features (Tensor): (N_train, D) features of the labelled reference set.
        train_labels (Tensor): (N_train,) integer labels in [0, num_classes).
        test_features (Tensor): (N_test, D) features to classify.
        num_classes (int): Number of classes C; classes with no training sample get no votes.
        k (int): Number of neighbours; clamped to N_train when larger. Defaults to 200.
        tau (float): Temperature of the vote weights exp(s / tau). Defaults to 0.07.
        chunk_size (int): Test rows per similarity matrix. Defaults to 256.

    Returns:
        Tensor: (N_test, C) float32 votes; rank them with :func:`top_classes`.
    """
    _check_knn_inputs(train_features, train_labels, test_features, num_classes, k, tau, chunk_size)
    device = train_features.device
    num_neighbours = min(k, train_features.shape[0])
    train_unit = F.normalize(train_features.float(), dim=1)  # (N_train, D)
    train_labels = train_labels.to(device=device, dtype=torch.long)  # (N_train,)
    votes = torch.zeros(test_features.shape[0], num_classes, device=device)  # (N_test, C)
    for start in range(0, test_features.shape[0], chunk_size):
        test_unit = F.normalize(
            test_features[start:start + chunk_size].to(device=device, dtype=torch.float32),
            dim=1)  # (B, D)
        similarity = test_unit @ train_unit.T  # (B, D) x (D, N_train) -> (B, N_train)
        top_similarity, top_index = nearest_neighbours(similarity, num_neighbours)  # (B, k)
        del similarity
        max_similarity = top_similarity.amax(dim=1, keepdim=True)  # (B, 1)
        weights = torch.exp((top_similarity - max_similarity) / tau)  # (B, k), alpha_i / alpha_max
        votes[start:start + chunk_size].scatter_add_(1, train_labels[top_index], weights)
    return votes


def top_classes(scores: Tensor, num_top: int) -> Tensor:
    """Class indices sorted by decreasing score; equal scores rank the lower class index first.

    Args:
        scores (Tensor): (N, C) per-class scores, e.g. from :func:`weighted_knn_classify`.
        num_top (int): How many classes to return per row; clamped to C.

    Returns:
        Tensor: (N, min(num_top, C)) long class indices, best first.
    """
    ranking = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (N, C)
    return ranking[:, :num_top]


def topk_accuracy(scores: Tensor, labels: Tensor,
                  topk: Sequence[int] = (1, 5)) -> Tuple[float, ...]:
    """Top-k accuracy in percent, with the tie rule of :func:`top_classes`.

    A k at least C counts every sample as correct (its class is always among the top C).

    Args:
        scores (Tensor): (N, C) per-class scores.
        labels (Tensor): (N,) true class indices.
        topk (Sequence[int]): The k of each accuracy. Defaults to (1, 5).

    Returns:
        tuple[float, ...]: One accuracy in [0, 100] per entry of ``topk``.
    """
    if scores.shape[0] == 0:
        raise ValueError('topk_accuracy got 0 samples; pass at least one row of scores and labels.')
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f'scores must be (N, C) and labels (N,), got {tuple(scores.shape)} and '
                         f'{tuple(labels.shape)}; pass one label per row of scores.')
    _check_topk(topk)
    ranking = top_classes(scores, max(topk))  # (N, maxk)
    hits = ranking == labels.to(ranking.device).view(-1, 1)  # (N, maxk)
    return tuple(100.0 * int(hits[:, :top].any(dim=1).sum()) / len(labels) for top in topk)


def nearest_neighbours(similarity: Tensor, num_neighbours: int) -> Tuple[Tensor, Tensor]:
    """The ``num_neighbours`` most similar columns of each row (lower index wins a tie).

    ``torch.topk`` picks arbitrarily among columns tied at the k-th value (and differently on CPU
    and GPU). The rare rows with such a tie (duplicate images, collapsed features) are redone so
    that the tied columns with the lowest indices are kept.

    Args:
        similarity (Tensor): (B, N) similarities.
        num_neighbours (int): k, at most N.

    Returns:
        tuple[Tensor, Tensor]: (B, k) similarities and (B, k) column indices of the neighbours.
    """
    top_similarity, top_index = similarity.topk(num_neighbours, dim=1)  # (B, N) -> (B, k)
    kth_similarity = top_similarity[:, -1:]  # (B, 1)
    num_candidates = (similarity >= kth_similarity).sum(dim=1)  # (B,)
    tied_rows = (num_candidates > num_neighbours).nonzero().flatten()  # (R,)
    if tied_rows.numel() == 0:
        return top_similarity, top_index
    rows_similarity = similarity[tied_rows]  # (R, N)
    rows_kth = kth_similarity[tied_rows]  # (R, 1)
    above_kth = rows_similarity > rows_kth  # (R, N)
    at_kth = rows_similarity == rows_kth  # (R, N)
    num_needed_at_kth = num_neighbours - above_kth.sum(dim=1, keepdim=True)  # (R, 1)
    rank_at_kth = at_kth.cumsum(dim=1, dtype=torch.int32)  # (R, N), 1-based among the tied
    keep = above_kth | (at_kth & (rank_at_kth <= num_needed_at_kth))  # (R, N), k per row
    top_index[tied_rows] = keep.nonzero()[:, 1].view(-1, num_neighbours)  # (R, k)
    return similarity.gather(1, top_index), top_index


def _check_hyperparameters(k: int, tau: float, chunk_size: int) -> None:
    """Raise ``ValueError`` unless k, tau and chunk_size are positive."""
    if k < 1 or tau <= 0 or chunk_size < 1:
        raise ValueError(f'k, tau and chunk_size must be positive, got k={k}, tau={tau}, '
                         f'chunk_size={chunk_size}; NPID uses k=200, tau=0.07.')


def _check_topk(topk: Sequence[int]) -> None:
    """Raise ``ValueError`` unless topk is a non-empty sequence of positive integers."""
    if not topk or min(topk) < 1:
        raise ValueError(f'topk must hold positive integers, got {topk}; use e.g. (1, 5).')


def _check_knn_inputs(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                      num_classes: int, k: int, tau: float, chunk_size: int) -> None:
    """Raise ``ValueError`` naming the bad argument of :func:`weighted_knn_classify` and the fix."""
    if train_features.ndim != 2 or train_features.shape[0] == 0:
        raise ValueError(f'train_features must be a non-empty (N_train, D) tensor, got shape '
                         f'{tuple(train_features.shape)}; pass one feature row per training sample.')
    if test_features.ndim != 2 or test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f'test_features must be (N_test, {train_features.shape[1]}) like '
                         f'train_features, got {tuple(test_features.shape)}; extract both with '
                         'the same model and layer.')
    if train_labels.shape != train_features.shape[:1]:
        raise ValueError(f'train_labels must be ({train_features.shape[0]},), one per training '
                         f'feature, got {tuple(train_labels.shape)}.')
    _check_hyperparameters(k, tau, chunk_size)
    low, high = int(train_labels.min()), int(train_labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f'train_labels span [{low}, {high}], outside [0, num_classes={num_classes}); '
                         f'use labels >= 0 and set num_classes to at least {high + 1}.')
    for name, features in (('train_features', train_features), ('test_features', test_features)):
        if not torch.isfinite(features).all():
            raise ValueError(f'{name} contain NaN or inf; the model producing them has diverged '
                             '(check the loss, lower the learning rate).')


@METRICS.register_module()
class WeightedKNN(BaseMetric):
    """Weighted kNN accuracy of NPID (Sec. 3.4) as a validation metric during pre-training.

    The validation dataset must be a ``KNNSplits`` (``pic_plugin/datasets/knn_splits.py``): it
    yields the labelled reference ("train") images followed by the evaluated ("test") images, and
    marks each data sample's metainfo with ``knn_split``. The model's ``predict()`` returns data
    samples carrying the feature as the 1-D tensor field ``knn_feature`` and the label as
    ``gt_label``. Results of all ranks are gathered by ``BaseMetric.collect_results``; the vote of
    Sec. 3.4, w_c = sum over the k nearest training features of exp(s_i / tau) 1(c_i = c), is then
    computed once by :func:`weighted_knn_classify` and ranked by :func:`top_classes`.

    Example:
        >>> val_dataloader = dict(dataset=dict(type='KNNSplits', train=..., test=...), ...)
        >>> val_evaluator = dict(type='WeightedKNN', k=200, tau=0.07)
        >>> # logs knn/top1 and knn/top5

    Args:
        k (int): Number of neighbours. Defaults to 200.
        tau (float): Temperature of the vote weights. Defaults to 0.07.
        num_classes (int, optional): Number of classes. None takes the larger of
            ``len(dataset_meta['classes'])`` (when the dataset has classes) and the largest
            label + 1. Defaults to None.
        chunk_size (int): Test rows per similarity matrix (memory is chunk_size x N_train
            floats). Defaults to 256.
        topk (Sequence[int]): The k of each reported top-k accuracy. Defaults to (1, 5).
        device (str): Where the neighbours are searched; 'cuda' is much faster for
            ImageNet-size reference sets. Defaults to 'cpu'.
        collect_device (str): Device used to gather results across ranks, 'cpu' or 'gpu'.
            Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names. None uses ``default_prefix``,
            'knn'. Defaults to None.
    """

    default_prefix: Optional[str] = 'knn'

    def __init__(self,
                 k: int = 200,
                 tau: float = 0.07,
                 num_classes: Optional[int] = None,
                 chunk_size: int = 256,
                 topk: Sequence[int] = (1, 5),
                 device: str = 'cpu',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        _check_hyperparameters(k, tau, chunk_size)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f'num_classes must be positive or None, got {num_classes}; '
                             'None infers it from the dataset classes and labels.')
        _check_topk(topk)
        self.k = k
        self.tau = tau
        self.num_classes = num_classes
        self.chunk_size = chunk_size
        self.topk = tuple(topk)
        self.device = device

    def process(self, data_batch: Any, data_samples: Sequence[Union[dict, BaseDataElement]]) -> None:
        """Store (feature on CPU, label, split) of every sample of a batch.

        Args:
            data_batch (Any): The batch from the dataloader (unused).
            data_samples (Sequence[dict | BaseDataElement]): The model's outputs; mmengine's
                ``Evaluator`` passes them as dicts (``DataSample.to_dict()``).
        """
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            split = sample.get('knn_split')
            if split not in ('train', 'test'):
                raise ValueError(f"WeightedKNN needs metainfo knn_split 'train' or 'test' on "
                                 f'every sample, got {split!r}; wrap the val dataset in '
                                 "dict(type='KNNSplits', train=..., test=...).")
            if 'knn_feature' not in sample or 'gt_label' not in sample:
                raise ValueError(f'WeightedKNN needs fields knn_feature and gt_label on every '
                                 f'sample, got fields {sorted(sample)}; the model predict() must '
                                 'store the 1-D feature as knn_feature, and the dataset a label.')
            feature = sample['knn_feature']
            if feature.ndim != 1:
                raise ValueError(f'WeightedKNN needs a 1-D knn_feature per sample, got shape '
                                 f'{tuple(feature.shape)}; flatten (or pool) it in predict().')
            feature = feature.detach().to(device='cpu', copy=True)  # (D,)
            self.results.append((feature, int(sample['gt_label']), split))

    def compute_metrics(self, results: List[Tuple[Tensor, int, str]]) -> Dict[str, float]:
        """Classify the gathered test features by their train neighbours (NPID Sec. 3.4).

        Args:
            results (list[tuple[Tensor, int, str]]): (feature, label, split) of every sample
                of all ranks.

        Returns:
            dict[str, float]: ``{'top1': .., 'top5': ..}`` in percent, one key per ``topk``.
        """
        splits = {'train': [], 'test': []}
        for feature, label, split in results:
            splits[split].append((feature, label))
        if not splits['train'] or not splits['test']:
            raise ValueError(f"WeightedKNN got {len(splits['train'])} 'train' and "
                             f"{len(splits['test'])} 'test' samples and needs both; wrap the val "
                             "dataset in dict(type='KNNSplits', train=..., test=...), each "
                             'non-empty.')
        train_features, train_labels = _stack_split(splits['train'])  # (N_train, D), (N_train,)
        test_features, test_labels = _stack_split(splits['test'])  # (N_test, D), (N_test,)
        scores = weighted_knn_classify(
            train_features.to(self.device),
            train_labels,
            test_features,
            num_classes=self._resolve_num_classes(train_labels, test_labels),
            k=self.k,
            tau=self.tau,
            chunk_size=self.chunk_size)  # (N_test, C)
        accuracies = topk_accuracy(scores, test_labels, self.topk)
        return {f'top{top}': accuracy for top, accuracy in zip(self.topk, accuracies)}

    def _resolve_num_classes(self, train_labels: Tensor, test_labels: Tensor) -> int:
        """``num_classes`` if given, else the most of the dataset's classes and labels + 1."""
        if self.num_classes is not None:
            return self.num_classes
        num_dataset_classes = len((self.dataset_meta or {}).get('classes') or ())
        return max(num_dataset_classes, int(train_labels.max()) + 1, int(test_labels.max()) + 1)


def _stack_split(samples: List[Tuple[Tensor, int]]) -> Tuple[Tensor, Tensor]:
    """Stack (feature, label) pairs into a (N, D) feature matrix and a (N,) label vector."""
    features = torch.stack([feature for feature, _ in samples])  # (N, D)
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)  # (N,)
    return features, labels
