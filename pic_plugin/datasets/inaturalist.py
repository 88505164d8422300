"""INaturalist2018: the iNaturalist 2018 species classification set, read from its official JSON files."""
from typing import List

from mmengine.fileio import join_path, load
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS


@DATASETS.register_module()
class INaturalist2018(BaseDataset):
    """The iNaturalist 2018 fine-grained classification data set (8,142 species).

    Van Horn et al., "The iNaturalist Species Classification and Detection Dataset", CVPR 2018
    (https://github.com/visipedia/inat_comp/tree/master/2018). The full-classifier paper (Table 9)
    and PIC (Table 8) fine-tune on ``train2018.json`` (437,513 images) and report top-1 / top-5
    accuracy on ``val2018.json`` (24,426 images).

    The annotation files are COCO-style: ``images`` (``id``, ``file_name`` relative to the data
    root, ...), one entry of ``annotations`` (``image_id``, ``category_id``) per image and
    ``categories`` (``id``, ``name``, ...) numbered ``0 .. N - 1``. The label of an image is its
    ``category_id``; ``classes`` are the category names in id order, unless ``classes`` or
    ``metainfo`` give them. After extracting the official archives::

        data/inat2018
        ├── train2018.json
        ├── val2018.json
        └── train_val2018
            ├── Plantae
            │   ├── 7477
            │   │   ├── 3b60c9486db1d2ee875f11a669fbde4a.jpg
            │   │   └── ...
            │   └── ...
            └── ...

    Args:
        ann_file (str): ``train2018.json`` or ``val2018.json``, relative to ``data_root``.
        data_root (str): The folder holding the annotation files and ``train_val2018``.
        **kwargs: The other arguments of mmpretrain's ``BaseDataset`` (``pipeline``,
            ``test_mode``, ``data_prefix`` for images stored elsewhere, ...).

    Example:
        >>> train_set = INaturalist2018(ann_file='train2018.json', data_root='data/inat2018')
        >>> len(train_set), len(train_set.CLASSES)
        (437513, 8142)
    """

    def load_data_list(self) -> List[dict]:
        """Read the annotation file into ``dict(img_path, gt_label)`` items, one per annotation.

        Raises:
            ValueError: If an annotation names an image id that ``images`` does not list, or if a
                category id (in ``categories`` or ``annotations``) is outside
                ``[0, number of categories)``.
        """
        content = load(self.ann_file)
        names = {category['id']: category['name'] for category in content['categories']}
        num_classes = len(names)
        for category_id in names:
            self._check_category_id(category_id, num_classes, 'categories')
        self._metainfo.setdefault('classes', tuple(names[index] for index in range(num_classes)))

        file_names = {image['id']: image['file_name'] for image in content['images']}
        data_list = []
        for annotation in content['annotations']:
            image_id = annotation['image_id']
            if image_id not in file_names:
                raise ValueError(f'{self.ann_file}: an annotation names image id {image_id!r}, '
                                 'which is not in its "images"')
            self._check_category_id(annotation['category_id'], num_classes, 'annotations')
            data_list.append(dict(img_path=join_path(self.img_prefix, file_names[image_id]),
                                  gt_label=int(annotation['category_id'])))
        return data_list

    def _check_category_id(self, category_id: int, num_classes: int, section: str) -> None:
        """Raise a ValueError if ``category_id`` (read from ``section``) is not a label index."""
        if not 0 <= category_id < num_classes:
            raise ValueError(f'{self.ann_file}: category id {category_id!r} in "{section}" is outside '
                             f'[0, {num_classes}), the number of categories; the labels are the '
                             'category ids, which must be numbered 0 .. N - 1')
