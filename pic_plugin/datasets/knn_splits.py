"""KNNSplits: one validation dataset holding the kNN reference ("train") set and the evaluated ("test") set."""
import copy
import logging
from typing import Any, Tuple, Union

from mmengine.dataset import force_full_init
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement
from mmpretrain.registry import DATASETS
from torch.utils.data import Dataset


@DATASETS.register_module()
class KNNSplits(Dataset):
    """Concatenate a labelled reference set and a test set, marking each sample with its split.

    The weighted kNN evaluation of NPID (Sec. 3.4) needs the features of the training images
    (the neighbours) and of the test images in the same validation loop. Indices
    ``0 .. len(train) - 1`` are the training items, the rest the test items; every item is the
    wrapped dataset's packed dict (``{'inputs', 'data_samples'}``, the pipeline ending in
    ``PackInputs``) with ``knn_split`` = 'train' or 'test' set in the data sample's metainfo,
    which the ``WeightedKNN`` metric reads. Both sets should use the deterministic test pipeline.

    As in mmengine's ``ConcatDataset``, ``full_init()`` (run at construction unless
    ``lazy_init=True``) loads the annotations of both sets; it also checks that both sets have
    the same ``classes``. ``metainfo`` is the test set's.

    Example:
        >>> val_dataloader = dict(
        ...     dataset=dict(type='KNNSplits',
        ...                  train=dict(type='ImageNet', split='train', pipeline=test_pipeline),
        ...                  test=dict(type='ImageNet', split='val', pipeline=test_pipeline)),
        ...     sampler=dict(type='DefaultSampler', shuffle=False), batch_size=256)
        >>> val_evaluator = dict(type='WeightedKNN', k=200, tau=0.07)

    Args:
        train (dict | Dataset): The labelled reference set, or its config built with
            ``DATASETS.build``.
        test (dict | Dataset): The evaluated set, or its config.
        lazy_init (bool): Whether to defer loading the annotations of both sets to the first
            ``full_init()``, ``len()`` or item access. Defaults to False.
    """

    def __init__(self, train: Union[dict, Dataset], test: Union[dict, Dataset],
                 lazy_init: bool = False) -> None:
        self.train = _build_split(train, 'train')
        self.test = _build_split(test, 'test')
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """A copy of the test set's meta information (e.g. ``classes``)."""
        return copy.deepcopy(getattr(self.test, 'metainfo', {}))

    def full_init(self) -> None:
        """Load the annotations of both sets (once) and check that their classes agree."""
        if self._fully_initialized:
            return
        for dataset in (self.train, self.test):
            if hasattr(dataset, 'full_init'):
                dataset.full_init()
        train_classes = getattr(self.train, 'metainfo', {}).get('classes')
        test_classes = self.metainfo.get('classes')
        if train_classes is not None and test_classes is not None \
                and list(train_classes) != list(test_classes):
            raise ValueError(f'KNNSplits: the train set has classes {_abridged(train_classes)} but '
                             f'the test set {_abridged(test_classes)}, so their labels do not '
                             'match; give both sets the same classes (or ann files of one '
                             'dataset).')
        self._num_train = len(self.train)
        self._num_test = len(self.test)
        self._fully_initialized = True

    @force_full_init
    def __len__(self) -> int:
        return self._num_train + self._num_test

    @force_full_init
    def get_data_info(self, index: int) -> dict:
        """The annotation of item ``index`` with its ``knn_split`` added.

        Args:
            index (int): Index into the concatenation train + test.

        Returns:
            dict: The wrapped dataset's annotation of that item, plus ``knn_split``.
        """
        split, dataset, local_index = self._locate(index)
        return dict(dataset.get_data_info(local_index), knn_split=split)

    def __getitem__(self, index: int) -> Any:
        """The wrapped dataset's packed item with ``knn_split`` in its data sample's metainfo.

        Args:
            index (int): Index into the concatenation train + test.

        Returns:
            dict: ``{'inputs': ..., 'data_samples': DataSample}`` from the wrapped pipeline.
        """
        if not self._fully_initialized:
            print_log('Please call `full_init()` method manually to accelerate the speed.',
                      logger='current', level=logging.WARNING)
            self.full_init()
        split, dataset, local_index = self._locate(index)
        item = dataset[local_index]
        data_sample = item.get('data_samples') if isinstance(item, dict) else None
        if not isinstance(data_sample, BaseDataElement):
            raise ValueError(f'KNNSplits: item {local_index} of the {split} set is '
                             f'{type(item).__name__} without a data sample under '
                             "'data_samples'; end both pipelines with dict(type='PackInputs').")
        data_sample.set_metainfo({'knn_split': split})
        return item

    @force_full_init
    def _locate(self, index: int) -> Tuple[str, Dataset, int]:
        """Split name, wrapped dataset and local index of item ``index`` (negative counts back)."""
        total = self._num_train + self._num_test
        if not -total <= index < total:
            raise IndexError(f'KNNSplits index {index} out of range for {total} items')
        index %= total
        if index < self._num_train:
            return 'train', self.train, index
        return 'test', self.test, index - self._num_train


def _build_split(dataset: Union[dict, Dataset], split: str) -> Dataset:
    """Build a split from its config, or check that an object is a sized, indexable dataset."""
    if isinstance(dataset, dict):
        return DATASETS.build(dataset)
    if not (hasattr(dataset, '__getitem__') and hasattr(dataset, '__len__')):
        raise ValueError(f'KNNSplits: {split} must be a dataset config dict or a dataset, got '
                         f'{type(dataset).__name__}; pass e.g. {split}=dict(type=...).')
    return dataset


def _abridged(classes: Any) -> str:
    """At most the first three class names and the count, for error messages."""
    names = list(classes)
    shown = ', '.join(repr(name) for name in names[:3])
    return f'[{shown}{", ..." if len(names) > 3 else ""}] ({len(names)} classes)'
