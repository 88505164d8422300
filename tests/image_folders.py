"""Folders of small random-content PNGs, flat or nested, in the image modes that users' folders mix."""
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

# RGB, greyscale, greyscale + alpha, RGBA, palette: what a folder of photos, scans and screenshots holds
MIXED_MODES = ('RGB', 'L', 'LA', 'RGBA', 'P')


def random_image(rng: np.random.Generator, mode: str) -> Image.Image:
    """A 24-48 px image of uniform noise (random height and width) in ``mode``."""
    height, width = rng.integers(24, 49, size=2)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def write_image_folder(root: Path, num_images: int, nested: bool, seed: int = 0) -> List[Path]:
    """Write ``num_images`` PNGs under ``root`` (modes cycling through ``MIXED_MODES``) and a text file.

    Flat: all in ``root``. Nested: spread over sub-folders 1 to 3 levels deep (``a/``, ``a/b/``, ``a/b/c/``, ...),
    some images in ``root`` itself. The text file (not an image) must be skipped.

    Returns:
        list[Path]: The images written, in the sorted order of their paths relative to ``root``.
    """
    rng = np.random.default_rng(seed)
    folders = [Path('.'), Path('a'), Path('a/b'), Path('a/b/c'), Path('z'), Path('z/y')] if nested else [Path('.')]
    paths = []
    for index in range(num_images):
        path = root / folders[index % len(folders)] / f'image_{index:03d}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(rng, MIXED_MODES[index % len(MIXED_MODES)]).save(path)
        paths.append(path)
    (root / 'README.txt').write_text('not an image\n')
    return sorted(paths, key=lambda path: str(path.relative_to(root)))


def write_labelled_split(root: Path, classes: int, train_per_class: int, test_per_class: int) -> None:
    """``root/{train,test}/class_k/*.png`` in mmpretrain's ``CustomDataset`` layout, for the kNN evaluation."""
    rng = np.random.default_rng(1)
    for split, per_class in (('train', train_per_class), ('test', test_per_class)):
        for label in range(classes):
            folder = root / split / f'class_{label}'
            folder.mkdir(parents=True)
            for index in range(per_class):
                random_image(rng, 'RGB').save(folder / f'{index}.png')
