"""End-to-end: the digits multi-crop config (the public PIC release's 1 large + 3 small crops) trains through
tools/train.py and saves rows that took one update per step; both multi-crop configs make their crops with the
single-crop configs' augmentation.

The run uses the first 256 training images (mmengine's ``indices``), so an epoch is 2 iterations.
"""

import skimage.data
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

import pic_plugin  # noqa: F401  (registers the components)
from conftest import REPO_ROOT, SUBSET, load_checkpoint, train_two_short_epochs
from pic_plugin.datasets import VisitKey

CONFIGS = REPO_ROOT / 'configs'
DIGITS_CONFIG = CONFIGS / 'pic' / 'pic_resnet18-w16_1xb128-multicrop-coslr-20e_digits.py'
IN1K_CONFIG = CONFIGS / 'pic' / 'pic_resnet50_8xb64-multicrop-coslr-200e_in1k.py'


def test_digits_multicrop_config_trains_with_one_row_update_per_step(digits_workspace, tmp_path):
    work_dir = tmp_path / 'work'
    train_two_short_epochs(DIGITS_CONFIG, work_dir, cwd=digits_workspace)

    state = load_checkpoint(work_dir / 'epoch_2.pth')['state_dict']
    assert state['head.rows.weight'].shape == (SUBSET, 128)
    assert torch.isfinite(state['head.rows.weight']).all()
    # 4 steps, each one row update (the large crop's; the small crops' logits used the rows detached): the full
    # soft-max wrote every row at every step
    assert state['head.rows.transitions'].shape == (4, 2, 2)
    assert state['head.rows.last_step'].tolist() == [4] * SUBSET
    first_epoch = load_checkpoint(work_dir / 'epoch_1.pth')['state_dict']
    assert first_epoch['head.rows.last_step'].tolist() == [2] * SUBSET


def multicrop_pipelines(path):
    cfg = Config.fromfile(path)
    seeded = cfg.train_dataloader.dataset.pipeline[1]
    assert seeded.type == 'SeededByVisit' and len(seeded.transforms) == 1
    multi_view = seeded.transforms[0]
    assert multi_view.type == 'MultiView' and multi_view.num_views == [1, 3]
    return cfg, multi_view.transforms


def test_the_multicrop_configs_crop_as_the_release_with_the_single_crop_augmentation():
    for path, base, large, small in [
            (IN1K_CONFIG, 'imagenet_bs64_pic.py', (160, (0.14, 1.0)), (96, (0.08, 0.14))),  # the release's
            (DIGITS_CONFIG, 'digits_bs128_pic.py', (32, (0.5, 1.0)), (16, (0.3, 0.5)))]:
        cfg, (large_pipeline, small_pipeline) = multicrop_pipelines(path)
        assert cfg.model.num_large_views == 1
        for pipeline, (size, scale) in ((large_pipeline, large), (small_pipeline, small)):
            crop = pipeline[0]
            assert (crop.type, crop.scale, crop.crop_ratio_range) == ('RandomResizedCrop', size, scale), path.name
            # everything after the crop: the single-crop config's augmentation
            single_crop = Config.fromfile(CONFIGS / '_base_' / 'datasets' / base).view_pipeline
            assert pipeline[1:] == single_crop[1:], path.name


def test_the_in1k_multicrop_pipeline_makes_one_large_and_three_small_crops(tmp_path):
    cfg, _ = multicrop_pipelines(IN1K_CONFIG)
    init_default_scope(cfg.default_scope)
    photo = tmp_path / 'astronaut.png'
    Image.fromarray(skimage.data.astronaut()).save(photo)  # a real 512x512 photograph
    pipeline = Compose(cfg.train_dataloader.dataset.pipeline)
    packed = pipeline(dict(img_path=str(photo), sample_idx=VisitKey(17, seed=0, epoch=0, position=0)))
    assert [tuple(view.shape) for view in packed['inputs']] == [(3, 160, 160)] + [(3, 96, 96)] * 3
    assert packed['data_samples'].sample_idx == 17
