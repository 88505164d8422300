"""ContrastivePriorHook on a real Runner over the digits, and sharded over two gloo processes."""
import copy
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset

from conftest import TINY_CONFIG
from distributed import run_distributed
from pic_plugin.engine.hooks import ContrastivePriorHook
from progress_output import captured_progress

NUM_IMAGES, BATCH_SIZE = 40, 16
BN_STATISTICS = ('running_mean', 'running_var', 'num_batches_tracked')


@pytest.fixture
def runner(digits_workspace, tmp_path, monkeypatch):
    """The tiny PIC config on 40 digits, loaded in order without augmentation."""
    monkeypatch.chdir(digits_workspace)
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.update(batch_size=BATCH_SIZE, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.update(
        indices=NUM_IMAGES, pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
    cfg.model.head.num_classes = NUM_IMAGES
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    return Runner.from_cfg(cfg)


def expected_features(runner) -> torch.Tensor:
    """Projections of every image by a copy of the model in training mode (BatchNorm on batch statistics)."""
    model = copy.deepcopy(runner.model).train()
    loader = Runner.build_dataloader(dict(dataset=runner.train_dataloader.dataset, batch_size=BATCH_SIZE,
                                          sampler=dict(type='DefaultSampler', shuffle=False),
                                          collate_fn=dict(type='default_collate')))
    features = torch.zeros(NUM_IMAGES, 128)
    with torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            labels = torch.tensor([sample.sample_idx for sample in data['data_samples']])
            features[labels] = model.neck(model.backbone(data['inputs']))[0]
    return features


def test_rows_become_the_features_and_only_batch_norm_statistics_change(runner):
    model, rows = runner.model, runner.model.head.rows
    model.train()
    model.backbone.layer2.eval()  # a mixed state, restored as it was
    modes = {name: module.training for name, module in model.named_modules()}
    for lr in (0.1, 0.2):  # two steps made before the prior (a run started from load_from, say)
        rows.step(lr, 0.9, 1e-4)
    rows.momentum.fill_(1.)
    before = copy.deepcopy(model.state_dict())
    features = expected_features(runner)

    with captured_progress() as text:
        ContrastivePriorHook().before_train(runner)

    assert re.search(rf'\] {NUM_IMAGES}/{NUM_IMAGES}, .*ETA: +0s\n', text.getvalue())  # the progress bar
    assert f'contrastive prior: {NUM_IMAGES} images in' in text.getvalue()
    assert torch.allclose(rows.weight, features, atol=1e-5)
    assert (rows.momentum == 0).all() and (rows.last_step == rows.num_steps).all() and rows.num_steps == 2
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith('head.rows.'):
            continue
        if key.endswith(BN_STATISTICS):
            assert not torch.equal(after[key], value), f'{key} did not update'
        else:
            assert torch.equal(after[key], value), f'{key} changed'
    assert sum(isinstance(module, _BatchNorm) for module in model.modules()) > 10
    assert {name: module.training for name, module in model.named_modules()} == modes


def test_row_norm_scales_the_normalised_features(runner):
    features = expected_features(runner)
    ContrastivePriorHook(row_norm=0.5).before_train(runner)
    rows = runner.model.head.rows.weight
    assert torch.allclose(rows.norm(dim=1), torch.full((NUM_IMAGES, ), 0.5))
    assert torch.allclose(rows, F.normalize(features, dim=1) * 0.5, atol=1e-5)


def test_a_resumed_run_keeps_the_checkpoint_rows(runner):
    rows = runner.model.head.rows.weight.clone()
    runner.train_loop._iter = 3
    ContrastivePriorHook().before_train(runner)
    assert torch.equal(runner.model.head.rows.weight, rows)


def test_non_positive_row_norm_is_refused():
    with pytest.raises(ValueError, match='row_norm=0 must be positive, or None'):
        ContrastivePriorHook(row_norm=0)


class NumberedImages(Dataset):
    """13 seeded random 16 x 16 images, each packed with its index as ``sample_idx``."""

    def __len__(self) -> int:
        return 13

    def __getitem__(self, index: int) -> dict:
        image = torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(index))
        return dict(inputs=image.to(torch.uint8), data_samples=DataSample(metainfo=dict(sample_idx=index)))


def prior_rows(rank: int, world_size: int, sharded: bool):
    """Rows written by the hook for a model whose features do not depend on the batch (GroupNorm), and its output."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='InstanceClassification',
        data_preprocessor=dict(type='SelfSupDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                      norm_cfg=dict(type='GN', num_groups=4)),
        neck=dict(type='MoCoV2Neck', in_channels=64, hid_channels=32, out_channels=16),
        head=dict(type='InstanceClsHead', num_classes=13, in_channels=16, sharded=sharded)))
    runner = SimpleNamespace(model=model, iter=0, seed=0, build_dataloader=Runner.build_dataloader,
                             train_dataloader=DataLoader(NumberedImages(), batch_size=4, collate_fn=default_collate),
                             logger=MMLogger.get_instance('test_contrastive_prior_hook'))
    with captured_progress() as text:
        ContrastivePriorHook().before_train(runner)
    return model.head.rows.row_offset, model.head.rows.weight, text.getvalue()


def sharded_and_replicated_rows(rank: int, world_size: int):
    return prior_rows(rank, world_size, sharded=True), prior_rows(rank, world_size, sharded=False)


def test_two_processes_write_the_rows_one_process_writes():
    _, single, _ = prior_rows(0, 1, sharded=False)
    (sharded_0, replicated_0), (sharded_1, replicated_1) = run_distributed(sharded_and_replicated_rows, 2)
    # rank 0 shows the images of both ranks (7 + 7, the sampler pads rank 1 with a repeat); rank 1 shows nothing
    for output in (sharded_0[2], replicated_0[2]):
        assert re.search(r'\] 14/14, .*\n', output) and 'contrastive prior: 14 images in' in output
    for output in (sharded_1[2], replicated_1[2]):
        assert 'contrastive prior:' not in output and '/14' not in output
    # 7 + 6 rows; the sampler deals the images to the ranks in turn, so each writes rows the other projected
    assert (sharded_0[0], sharded_1[0]) == (0, 7)
    assert torch.allclose(torch.cat([sharded_0[1], sharded_1[1]]), single, atol=1e-5)
    assert torch.allclose(replicated_0[1], single, atol=1e-5) and torch.allclose(replicated_1[1], single, atol=1e-5)
