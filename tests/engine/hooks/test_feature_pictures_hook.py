"""FeaturePicturesHook writes its two pictures through the runner's visualizer at every validation of a training."""
from pathlib import Path
from types import SimpleNamespace

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

from conftest import TINY_CONFIG
from pic_plugin.engine.hooks import FeaturePicturesHook

CELL_SIZE = 16
# retrieval_grid's layout: 8 rows of tiles (cell + 2 x 3-pixel frame) and 4-pixel gaps; 1 query + 8 neighbours
# per row, the query's column set off by 2 x 4 pixels more
TILE_STEP = CELL_SIZE + 2 * 3 + 4
GRID_SIZE = (9 * TILE_STEP + 3 * 4, 8 * TILE_STEP + 4)  # (width, height)


def test_each_validation_of_a_training_writes_the_map_and_the_grid(digits_workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(digits_workspace)
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.update(batch_size=32, num_workers=0)
    cfg.train_dataloader.dataset.indices = 64
    cfg.model.head.num_classes = 64
    cfg.val_dataloader.update(num_workers=0)
    cfg.val_dataloader.dataset.train.indices = 120
    cfg.val_dataloader.dataset.test.indices = 40
    cfg.train_cfg.update(max_epochs=2, val_interval=1)
    cfg.default_hooks.feature_pictures.update(enable=True, map_size=(320, 240), cell_size=CELL_SIZE)
    runner = Runner.from_cfg(cfg)
    runner.train()

    vis_image = Path(runner.log_dir) / 'vis_data' / 'vis_image'  # LocalVisBackend's folder
    assert sorted(path.name for path in vis_image.iterdir()) == [
        'retrieval_1.png', 'retrieval_2.png', 'tsne_1.png', 'tsne_2.png']
    for epoch in (1, 2):
        assert Image.open(vis_image / f'tsne_{epoch}.png').size == (320, 240)
        assert Image.open(vis_image / f'retrieval_{epoch}.png').size == GRID_SIZE
    assert runner.message_hub.get_scalar('val/knn/top1') is not None  # the metric saw the same loop


def test_a_disabled_hook_does_nothing():
    hook = FeaturePicturesHook()
    runner = SimpleNamespace()  # any use of the runner would fail
    hook.before_val_epoch(runner)
    hook.after_val_iter(runner, 0, {}, [])
    hook.after_val_epoch(runner, {})


def test_a_validation_set_that_is_not_knn_splits_is_refused():
    runner = SimpleNamespace(val_dataloader=SimpleNamespace(dataset=[0, 1, 2]))
    with pytest.raises(ValueError, match=r"need a KNNSplits validation data set, got list; set "
                                         r"val_dataloader.dataset=dict\(type='KNNSplits'"):
        FeaturePicturesHook(enable=True).before_val_epoch(runner)


def test_bad_arguments_are_refused_when_the_hook_is_built():
    with pytest.raises(ValueError, match=r"method='pca' is not one of \('auto', 'tsne', 'umap'\)"):
        FeaturePicturesHook(method='pca')
    with pytest.raises(ValueError, match=r'max_points=1 must be at least 2'):
        FeaturePicturesHook(max_points=1)
