"""End-to-end: the NPID tiny config trains through tools/train.py on real images and reports the weighted kNN;
the CIFAR-10 config runs a step on CIFAR-shaped images, the ImageNet one holds the paper's recipe.

The run uses the first 256 training images (mmengine's ``indices``), so an epoch is 2 iterations.
"""

import numpy as np
import skimage.data
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, default_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from PIL import Image

import pic_plugin  # noqa: F401  (registers the components)
from conftest import REPO_ROOT, SUBSET, load_checkpoint, train_two_short_epochs
from pic_plugin.datasets import VisitKey

NPID_TINY_CONFIG = REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18-w16_1xb128-coslr-20e_digits.py'


def test_npid_tiny_config_trains_and_checkpoints_the_bank(digits_workspace, tmp_path):
    work_dir = tmp_path / 'work'
    train_two_short_epochs(NPID_TINY_CONFIG, work_dir, cwd=digits_workspace)

    state = load_checkpoint(work_dir / 'epoch_2.pth')['state_dict']
    bank = state['head.bank.weight']
    assert bank.shape == (SUBSET, 128)
    assert torch.allclose(bank.norm(dim=1), torch.ones(SUBSET), atol=1e-5)
    first_epoch_bank = load_checkpoint(work_dir / 'epoch_1.pth')['state_dict']
    assert (first_epoch_bank['head.bank.weight'] != bank).any(dim=1).all()  # every image updated its row again
    assert state['head.num_steps'].item() == 4


def test_npid_cifar10_config_runs_a_step_on_cifar_shaped_images():
    """The data are not here, so the pipeline and the model get CIFAR-shaped images in the same format."""
    cfg = Config.fromfile(REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18_1xb128-steplr-200e_cifar10.py')
    init_default_scope(cfg.default_scope)
    assert cfg.train_dataloader.dataset.download is False
    pipeline = Compose(cfg.train_pipeline)
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    # 16 visits, 16 draws of the colour jitter: both signs of the hue shift
    packed = [pipeline(dict(img=image, sample_idx=VisitKey(index, seed=0, epoch=0, position=index), gt_label=3))
              for index, image in enumerate(images)]
    assert [tuple(item['inputs'][0].shape) for item in packed] == [(3, 32, 32)] * 16
    model = MODELS.build(cfg.model)
    assert (model.head.num_classes, model.head.num_noise, model.head.temperature) == (50000, 4096, 0.07)
    losses = model.train_step(default_collate(packed[:2]), build_optim_wrapper(model, cfg.optim_wrapper))
    assert torch.isfinite(losses['loss']) and model.head.num_steps.item() == 1


def test_npid_r50_config_holds_the_paper_schedule_and_its_pipelines_run(tmp_path):
    cfg = Config.fromfile(REPO_ROOT / 'configs' / 'npid_r50.py')
    assert cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4)
    assert cfg.param_scheduler == [dict(type='MultiStepLR', by_epoch=True, milestones=[120, 160], gamma=0.1)]
    assert cfg.train_cfg.max_epochs == 200
    head = cfg.model.head
    assert (head.num_classes, head.in_channels, head.num_noise, head.temperature, head.bank_momentum) == (
        1281167, 128, 4096, 0.07, 0.5)
    assert cfg.model.neck == dict(type='LinearNeck', in_channels=2048, out_channels=128, gap_dim=2, norm_cfg=None)

    init_default_scope(cfg.default_scope)
    photo = tmp_path / 'astronaut.png'
    Image.fromarray(skimage.data.astronaut()).save(photo)  # a real 512x512 RGB photograph
    for epoch in range(4):
        packed = Compose(cfg.train_pipeline)(dict(img_path=str(photo), sample_idx=VisitKey(5, 0, epoch, 0)))
        assert [tuple(view.shape) for view in packed['inputs']] == [(3, 224, 224)]
    centre = Compose(cfg.test_pipeline)(dict(img_path=str(photo), sample_idx=5))['inputs']
    expected = np.asarray(Image.open(photo).resize((256, 256), Image.BILINEAR))[16:240, 16:240]  # RGB order
    assert np.abs(centre.permute(1, 2, 0).numpy().astype(int) - expected).mean() < 2
