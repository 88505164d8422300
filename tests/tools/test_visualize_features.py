"""tools/visualize_features.py draws a checkpoint's kNN features through the visualizer and into --out-dir."""
import argparse
import re
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from PIL import Image

from conftest import REPO_ROOT, TINY_CONFIG, run_cli
from visualize_features import build_config

# retrieval_grid's layout at the tool's defaults: 8 queries x (1 + 8 neighbours), 64-pixel cells in 3-pixel frames,
# 4-pixel gaps, the query's column set off by 8 pixels more
TILE_STEP = 64 + 2 * 3 + 4
GRID_SIZE = (9 * TILE_STEP + 3 * 4, 8 * TILE_STEP + 4)  # (width, height)


def test_the_tool_writes_both_pictures_through_the_visualizer_and_into_the_out_dir(digits_workspace, tmp_path):
    cfg = Config.fromfile(TINY_CONFIG)
    init_default_scope('mmpretrain')
    torch.manual_seed(7)
    checkpoint = tmp_path / 'untrained.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(), meta=dict(epoch=3)), checkpoint)

    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'visualize_features.py', TINY_CONFIG, checkpoint,
                      '--out-dir', tmp_path / 'out', '--out-prefix', 'digits_', '--work-dir', tmp_path / 'work',
                      '--max-points', 300, '--cfg-options', 'val_dataloader.num_workers=0'], cwd=digits_workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert re.search(r'kNN features: 300 images in [\d.]+ s', output), output[-3000:]  # the progress summary
    assert re.search(r'features of: +300 images \(50 held out\)', output), output[-3000:]  # 297 x 300 / 1797

    vis_images = list((tmp_path / 'work').glob('*/vis_data/vis_image/*.png'))  # LocalVisBackend's files
    assert sorted(path.name for path in vis_images) == ['retrieval_3.png', 'tsne_3.png']  # step = the epoch
    for path in vis_images:
        out_file = tmp_path / 'out' / f'digits_{path.name[:-len("_3.png")]}.png'
        assert str(path) in output and str(out_file) in output
        expected_size = GRID_SIZE if path.name.startswith('retrieval') else (800, 800)
        assert Image.open(path).size == Image.open(out_file).size == expected_size
        np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(out_file)))


def test_a_config_without_a_validation_set_is_refused(tmp_path):
    config = tmp_path / 'no_val.py'
    config.write_text(f"_base_ = ['{TINY_CONFIG}']\nval_dataloader = None\n")
    args = argparse.Namespace(config=str(config), cfg_options=None, work_dir=None)
    with pytest.raises(ValueError, match=r"has no val_dataloader: add the weighted-kNN validation"):
        build_config(args)
