"""Write scikit-learn's handwritten digits as 32x32 PNGs in mmpretrain's CustomDataset folder layout.

    python tools/prepare_digits.py [--out data/digits] [--num-train 1500]

Creates ``OUT/train/<digit>/<index>.png`` and ``OUT/test/<digit>/<index>.png``: real images that ship with an
installed package, so the demo and the tests need no download. Does nothing when the folders already hold
the expected number of images.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

IMAGE_SIZE = 32


def count_images(folder: Path) -> int:
    return sum(1 for _ in folder.glob('*/*.png')) if folder.is_dir() else 0


def prepare_digits(out_dir: Path, num_train: int = 1500, seed: int = 0) -> None:
    """Write the train / test split of the 1,797 digits under ``out_dir``."""
    digits = load_digits()
    if not 0 < num_train < len(digits.images):
        raise ValueError(f'--num-train {num_train} must lie in [1, {len(digits.images) - 1}].')
    order = np.random.default_rng(seed).permutation(len(digits.images))
    splits = {'train': order[:num_train], 'test': order[num_train:]}
    if all(count_images(out_dir / name) == len(indices) for name, indices in splits.items()):
        return
    for name, indices in splits.items():
        for index in indices:
            pixels = (digits.images[index] * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
            image = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
            path = out_dir / name / str(digits.target[index]) / f'{index:04d}.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=Path('data/digits'), help='output folder')
    parser.add_argument('--num-train', type=int, default=1500, help='images in the training split')
    args = parser.parse_args()
    prepare_digits(args.out, args.num_train)
    print(f'digits written to {args.out} (train: {count_images(args.out / "train")}, '
          f'test: {count_images(args.out / "test")})')


if __name__ == '__main__':
    main()
