"""UnlabelledImageFolder: every image file under a folder, nested or flat, as a training set without labels."""
import os.path as osp
from typing import Any, List, Sequence

from mmengine.fileio import get_file_backend
from mmpretrain.datasets import CustomDataset
from mmpretrain.datasets.custom import get_samples
from mmpretrain.registry import DATASETS

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


@DATASETS.register_module()
class UnlabelledImageFolder(CustomDataset):
    """All image files under ``data_root/data_prefix``, at any depth, without labels.

    mmpretrain's ``CustomDataset`` with ``with_label=False``. Instance classification needs no labels: an
    image's class is its index (``sample_idx``) in the sorted list of paths, so sub-folders may be named
    anything (dates, cameras, shards) and are never read as classes. Files of other extensions are skipped. ::

        data_root/data_prefix
        ├── 0001.jpg
        ├── holiday
        │   ├── beach.png
        │   └── 2024
        │       └── ...
        └── ...

    The folder is checked before the run starts: a missing one, or one without any image file, raises a
    ``ValueError`` naming the path looked at, the ``data_root`` and ``data_prefix`` that gave it, and the
    layout expected. A file that cannot be read or decoded (empty, truncated, not an image) stops training at its
    first load with its path and the fix; ``tools/count_images.py CONFIG --check`` lists all of them beforehand.
    Greyscale, palette, RGBA and 16-bit images may be mixed with RGB ones: ``LoadImageFromFile``
    (``color_type='color'``, its default) decodes every one to 3 channels of 8 bits (alpha dropped, palette
    expanded, 16 bits scaled to 8).

    Example:
        >>> train_dataloader = dict(
        ...     dataset=dict(type='UnlabelledImageFolder', data_root='data/my_images/', pipeline=train_pipeline),
        ...     sampler=dict(type='DefaultSampler', shuffle=True), batch_size=64)

    Args:
        data_root (str): The folder of the images, or the folder that ``data_prefix`` is relative to.
            Defaults to ''.
        data_prefix (str): A sub-folder of ``data_root`` that holds the images; '' takes ``data_root``
            itself. Defaults to ''.
        extensions (Sequence[str]): File name endings of the images (compared in lower case). Defaults to
            ``('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')``.
        **kwargs: The other arguments of mmpretrain's ``CustomDataset`` (``pipeline``, ``indices``,
            ``lazy_init``, ...).
    """

    def __init__(self,
                 data_root: str = '',
                 data_prefix: str = '',
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 **kwargs) -> None:
        self.given_root, self.given_prefix = data_root, data_prefix
        super().__init__(data_root=data_root, data_prefix=data_prefix, extensions=extensions, with_label=False,
                         **kwargs)

    def _find_samples(self) -> List[str]:
        """The image files under the folder (relative paths, sorted), or a ``ValueError`` that says what to fix.

        Raises:
            ValueError: If the folder does not exist or holds no file with one of ``extensions``.
        """
        folder = self.img_prefix
        backend = get_file_backend(folder, enable_singleton=True)
        given = f'(data_root={self.given_root!r}, data_prefix={self.given_prefix!r})'
        layout = (f'Expected: image files ({", ".join(sorted(self.extensions))}) in that folder, directly or in '
                  'sub-folders of any depth; sub-folders are not classes.')
        if not backend.isdir(folder):
            raise ValueError(
                f'{type(self).__name__}: there is no folder {osp.abspath(folder)} {given}: set '
                'train_dataloader.dataset.data_root (and data_prefix, a sub-folder of it) to the folder of your '
                'images, e.g. --cfg-options train_dataloader.dataset.data_root=/path/to/images. ' + layout)
        samples, _ = get_samples(folder, None, is_valid_file=self.is_valid_file, backend=backend)
        if not samples:
            others = sorted(backend.list_dir_or_file(folder, list_dir=False, list_file=True, recursive=True))
            found = (f'it holds {len(others)} other file{"s" * (len(others) > 1)} ({", ".join(others[:3])}'
                     f'{", ..." * (len(others) > 3)})') if others else 'it holds no file'
            raise ValueError(
                f'{type(self).__name__}: no image file under {osp.abspath(folder)} {given}; {found}: set '
                'train_dataloader.dataset.data_root / data_prefix to the folder of your images, or add their '
                'file name ending to train_dataloader.dataset.extensions. ' + layout)
        return samples

    def prepare_data(self, idx: int) -> Any:
        """The pipeline's output for image ``idx``.

        Raises:
            ValueError: If the pipeline fails on the image, naming its file (mmcv's loader does not always, e.g.
                not for an empty file) and the fix.
        """
        try:
            return super().prepare_data(idx)
        except Exception as error:  # the cause stays chained; this adds which file and what to do
            path, cause = self.get_data_info(idx)['img_path'], f'{type(error).__name__}: {str(error).strip()}'
            raise ValueError(
                f'{type(self).__name__}: the pipeline failed on image {idx}, {path} ({cause}): if the file is empty, '
                'truncated or not an image, remove or replace it; `python tools/count_images.py CONFIG --check` '
                'lists every file that fails to load.') from error
