"""End-to-end: every config in configs/benchmarks/ trains two iterations and tests through `mim` on the CPU, starting
from a PIC ResNet-50 backbone exported by tools/model_converters/extract_backbone.py.

The pre-training checkpoint is a stand-in (the paper's ResNet-50 cannot be pre-trained here): an
``InstanceClassification`` built from configs/pic_r50.py with random weights, saved as the runner saves one. The
data sets are a few 64x64 images that this file writes in the layout each host data set class reads (COCO json
with boxes and polygon masks, VOC xml, Cityscapes and VOC segmentation maps, ImageNet lists, iNaturalist json).
Each run uses the real config, shrunk by ``tiny_run`` to tiny image sizes, two iterations and a learning rate of 0,
so that the backbone in the trained checkpoint must still hold exactly the exported weights.
"""
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch
from mmdet.datasets import CocoDataset
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from conftest import REPO_ROOT, bin_path, run_cli

BENCHMARKS = REPO_ROOT / 'configs' / 'benchmarks'
EXPORTED = Path('work_dirs') / 'pic_r50_backbone.pth'  # the configs' default checkpoint, relative to the workspace
IMAGE_SIZE = 64
NUM_IMAGES = 4
VOC_DET_CLASSES = ('dog', 'car')
# CocoMetric maps predicted labels to the json's categories, so the json lists all 80; the images hold two
COCO_CATEGORIES = [dict(id=index + 1, name=name) for index, name in enumerate(CocoDataset.METAINFO['classes'])]
COCO_OBJECTS = (COCO_CATEGORIES[0], COCO_CATEGORIES[2])  # person, car

# (host package, config, regular expressions that `mim test` must print)
CASES = [
    ('mmpretrain', 'linear/resnet50_8xb32-linear-coslr-100e_in1k.py', [r'accuracy/top1: \d', r'accuracy/top5: \d']),
    ('mmpretrain', 'semi/resnet50_8xb32-ft-nesterov-coslr-60e_in1k-1pct.py', [r'accuracy/top5: \d']),
    ('mmdet', 'mmdet/faster-rcnn_r50-c4_ms-24k_voc0712.py',
     [r'pascal_voc/mAP: \d', r'pascal_voc/AP50: \d', r'pascal_voc/AP75: \d']),
    ('mmdet', 'mmdet/mask-rcnn_r50-fpn_ms-1x_coco.py', [r'coco/bbox_mAP: -?\d', r'coco/segm_mAP: -?\d']),
    ('mmseg', 'mmseg/fcn_r50-d8_4xb2-80k_cityscapes-769x769.py', [r'mIoU: \d']),
    ('mmseg', 'mmseg/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py', [r'mIoU: \d']),
    ('mmpretrain', 'inat18/resnet50_8xb32-ft-coslr-100e_inat18.py', [r'accuracy/top1: \d', r'accuracy/top5: \d']),
]

# Image sizes of each resize / crop transform in a tiny run: (width, height) for mmdet / mmseg, pixels for mmpretrain.
TINY_SIZES = {
    'Resize': dict(scale=(96, 64)),
    'RandomChoiceResize': dict(scales=[(96, 64)]),
    'RandomResize': dict(scale=(128, 64)),
    'RandomCrop': dict(crop_size=(64, 64)),
    'Pad': dict(size=(64, 64)),
    'RandomResizedCrop': dict(scale=32),
    'ResizeEdge': dict(scale=36),
    'CenterCrop': dict(crop_size=32),
}


# ----------------------------------------------------------------------------------------------------- data sets
def shapes_image(path: Path, seed: int) -> List[Tuple[int, int, int, int]]:
    """Write a noisy 64x64 image with two filled rectangles; returns their boxes ``(x1, y1, x2, y2)``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    boxes = [(4, 6, 34, 40), (30, 28, 60, 58)]
    for (x1, y1, x2, y2), colour in zip(boxes, ([220, 40, 40], [40, 200, 220])):
        pixels[y1:y2, x1:x2] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return boxes


def label_map(path: Path, labels: Tuple[int, int], background: int = 0) -> None:
    """Write a segmentation map matching ``shapes_image``: the two rectangles' labels, a 255 (ignored) border."""
    labels_array = np.full((IMAGE_SIZE, IMAGE_SIZE), background, dtype=np.uint8)
    labels_array[6:40, 4:34] = labels[0]
    labels_array[28:58, 30:60] = labels[1]
    labels_array[:2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels_array).save(path)


def write_coco(root: Path) -> None:
    """data/coco: train2017 / val2017 images and instances_*.json with boxes and polygon masks."""
    for split in ('train2017', 'val2017'):
        images, annotations = [], []
        for index in range(NUM_IMAGES):
            name = f'{index:012d}.jpg'
            boxes = shapes_image(root / split / name, seed=index)
            images.append(dict(id=index + 1, file_name=name, width=IMAGE_SIZE, height=IMAGE_SIZE))
            for (x1, y1, x2, y2), category in zip(boxes, COCO_OBJECTS):
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=index + 1, category_id=category['id'], iscrowd=0,
                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                    segmentation=[[x1, y1, x2, y1, x2, y2, x1, y2]]))
        path = root / 'annotations' / f'instances_{split}.json'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=COCO_CATEGORIES)))


def write_voc_detection(devkit: Path) -> None:
    """data/VOCdevkit/VOC2007 (trainval + test) and VOC2012 (trainval): JPEGImages, Annotations xml, ImageSets."""
    for year, splits in (('VOC2007', ('trainval', 'test')), ('VOC2012', ('trainval', ))):
        for split in splits:
            ids = [f'{year}_{split}_{index}' for index in range(NUM_IMAGES)]
            for index, image_id in enumerate(ids):
                boxes = shapes_image(devkit / year / 'JPEGImages' / f'{image_id}.jpg', seed=index)
                objects = ''.join(
                    f'<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>'
                    f'<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>'
                    for (x1, y1, x2, y2), name in zip(boxes, VOC_DET_CLASSES))
                xml = devkit / year / 'Annotations' / f'{image_id}.xml'
                xml.parent.mkdir(parents=True, exist_ok=True)
                xml.write_text(f'<annotation><filename>{image_id}.jpg</filename><size><width>{IMAGE_SIZE}</width>'
                               f'<height>{IMAGE_SIZE}</height><depth>3</depth></size>{objects}</annotation>')
            image_set = devkit / year / 'ImageSets' / 'Main' / f'{split}.txt'
            image_set.parent.mkdir(parents=True, exist_ok=True)
            image_set.write_text('\n'.join(ids) + '\n')


def write_voc_segmentation(voc2012: Path) -> None:
    """data/VOCdevkit/VOC2012: JPEGImages, SegmentationClass(Aug) label maps, ImageSets/Segmentation lists."""
    for split, folder in (('train', 'SegmentationClass'), ('aug', 'SegmentationClassAug'),
                          ('val', 'SegmentationClass')):
        ids = [f'seg_{split}_{index}' for index in range(NUM_IMAGES)]
        for index, image_id in enumerate(ids):
            shapes_image(voc2012 / 'JPEGImages' / f'{image_id}.jpg', seed=index)
            label_map(voc2012 / folder / f'{image_id}.png', labels=(12, 7))  # dog, car
        image_set = voc2012 / 'ImageSets' / 'Segmentation' / f'{split}.txt'
        image_set.parent.mkdir(parents=True, exist_ok=True)
        image_set.write_text('\n'.join(ids) + '\n')


def write_cityscapes(root: Path) -> None:
    """data/cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/..._gtFine_labelTrainIds.png."""
    for split in ('train', 'val'):
        for index in range(NUM_IMAGES):
            stem = f'aachen_{index:06d}_000019'
            shapes_image(root / 'leftImg8bit' / split / 'aachen' / f'{stem}_leftImg8bit.png', seed=index)
            label_map(root / 'gtFine' / split / 'aachen' / f'{stem}_gtFine_labelTrainIds.png', labels=(13, 11),
                      background=0)  # car, person on road


def write_imagenet(root: Path) -> None:
    """data/imagenet: train/<wnid>/*.JPEG, val/*.JPEG and mmpretrain's meta/*.txt lists (with the 1% list)."""
    train_lines, val_lines = [], []
    for index in range(NUM_IMAGES):
        wnid = ('n01440764', 'n01443537')[index % 2]
        name = f'{wnid}/{wnid}_{index}.JPEG'
        shapes_image(root / 'train' / name, seed=index)
        train_lines.append(f'{name} {index % 2}')
        val_name = f'ILSVRC2012_val_{index + 1:08d}.JPEG'
        shapes_image(root / 'val' / val_name, seed=index)
        val_lines.append(f'{val_name} {index % 2}')
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    for name in ('train.txt', 'train_1percent.txt'):
        (root / 'meta' / name).write_text('\n'.join(train_lines) + '\n')
    (root / 'meta' / 'val.txt').write_text('\n'.join(val_lines) + '\n')


def write_inat2018(root: Path) -> None:
    """data/inat2018: train2018.json / val2018.json (COCO-style, the official files) and train_val2018 images."""
    categories = [dict(id=0, name='Aves'), dict(id=1, name='Plantae')]
    for split in ('train2018', 'val2018'):
        images, annotations = [], []
        for index in range(NUM_IMAGES):
            name = f'train_val2018/{categories[index % 2]["name"]}/{index % 2}/{split}_{index}.jpg'
            shapes_image(root / name, seed=index)
            images.append(dict(id=index, file_name=name, width=IMAGE_SIZE, height=IMAGE_SIZE))
            annotations.append(dict(id=index, image_id=index, category_id=index % 2))
        (root / f'{split}.json').write_text(json.dumps(dict(images=images, annotations=annotations,
                                                            categories=categories)))


# ------------------------------------------------------------------------------------------- pre-trained backbone
def write_stand_in_pretraining_checkpoint(path: Path) -> int:
    """An mmengine-style checkpoint of configs/pic_r50.py's model (a 64-row head) with random, distinctive weights.

    Every floating tensor, BatchNorm statistics included, is perturbed, so that no exported value can equal a
    freshly initialised downstream value by chance.

    Returns:
        int: The number of backbone tensors.
    """
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    import pic_plugin  # noqa: F401  (registers InstanceClassification)
    cfg = Config.fromfile(REPO_ROOT / 'configs' / 'pic_r50.py')
    cfg.model.head.num_classes = 64
    if cfg.model.head.get('negatives') == 'recent':
        cfg.model.head.num_negatives = 32
    init_default_scope('mmpretrain')
    model = PRETRAIN_MODELS.build(cfg.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
                tensor.add_(0.01 * torch.randn(tensor.shape, generator=generator))
            else:
                tensor.fill_(1000)
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, epoch=200), state_dict=model.state_dict()), path)
    return len(model.backbone.state_dict())


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """The working directory of every run: data/ and the exported backbone at the configs' default path."""
    root = tmp_path_factory.mktemp('downstream')
    write_coco(root / 'data' / 'coco')
    write_voc_detection(root / 'data' / 'VOCdevkit')
    write_voc_segmentation(root / 'data' / 'VOCdevkit' / 'VOC2012')
    write_cityscapes(root / 'data' / 'cityscapes')
    write_imagenet(root / 'data' / 'imagenet')
    write_inat2018(root / 'data' / 'inat2018')
    num_backbone_tensors = write_stand_in_pretraining_checkpoint(root / 'pretrain.pth')
    exported = run_cli([sys.executable, REPO_ROOT / 'tools' / 'model_converters' / 'extract_backbone.py',
                        root / 'pretrain.pth', root / EXPORTED], cwd=root)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert f'kept {num_backbone_tensors} backbone tensors' in exported.stdout, exported.stdout
    assert (f'verified: {num_backbone_tensors} tensors load into ResNet with no missing or unexpected key'
            in exported.stdout)
    return root


@pytest.fixture(scope='module')
def exported_backbone(workspace) -> Dict[str, torch.Tensor]:
    return torch.load(workspace / EXPORTED, weights_only=True)['state_dict']


# ------------------------------------------------------------------------------------------------- tiny runs
def walk(node: Any):
    """Every dict inside a config value, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from walk(value)


def tiny_run(cfg: Config) -> Config:
    """The same config on 64x64 images, two iterations, batch 2, no worker processes, lr 0, no validation."""
    for node in walk(cfg._cfg_dict):
        node.update({key: size for key, size in TINY_SIZES.get(node.get('type'), {}).items() if key in node})
        if node.get('type') in ('PolyLR', 'CosineAnnealingLR'):
            node['eta_min'] = 0.  # with lr 0, the schedule must stay at 0
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if cfg.train_cfg.get('type') == 'IterBasedTrainLoop':
        cfg.train_cfg.max_iters = 2
        cfg.default_hooks.checkpoint.update(by_epoch=False, interval=2)
    else:
        cfg.train_cfg.max_epochs = 1  # 4 images, batch 2
        cfg.default_hooks.checkpoint.update(interval=1)
    cfg.default_hooks.logger.interval = 1
    for hook in cfg.get('custom_hooks', []):
        if hook.type == 'mmpretrain.BatchSamplerPreciseBNHook':  # after the last iteration, on both batches
            hook.update(interval=2, num_samples=4)
    cfg.optim_wrapper.optimizer.lr = 0.
    cfg.randomness = dict(seed=0)
    model = cfg.model
    if 'data_preprocessor' in model and 'size' in model.data_preprocessor:  # mmseg pads batches to the crop size
        model.data_preprocessor.size = (64, 64)
    if model.get('test_cfg', {}).get('mode') == 'slide':
        model.test_cfg.update(crop_size=(64, 64), stride=(48, 48))
    if 'rpn_proposal' in model.get('train_cfg', {}):  # fewer RoIs through the box heads on the CPU
        model.train_cfg.rpn_proposal.max_per_img = 16
        model.train_cfg.rcnn.sampler.num = 8
        model.test_cfg.rpn.max_per_img = 8
        model.test_cfg.rcnn.update(score_thr=0., max_per_img=10)  # an untrained head scores ~1/81: keep its boxes
    return cfg


def backbone_tensors(state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


@pytest.mark.parametrize('package,config,metrics', CASES, ids=[case[1].split('/')[-1][:-3] for case in CASES])
def test_train_two_iterations_and_test_with_mim(package, config, metrics, workspace, exported_backbone, tmp_path):
    tiny_config = workspace / f'tiny_{Path(config).name}'
    cfg = tiny_run(Config.fromfile(BENCHMARKS / config))
    cfg.dump(tiny_config)
    work_dir = tmp_path / 'work'
    trained = run_cli([bin_path('mim'), 'train', package, tiny_config, '--work-dir', work_dir], cwd=workspace)
    log = trained.stdout + trained.stderr
    assert trained.returncode == 0, log[-4000:]
    assert f'load backbone. in model from: {EXPORTED}' in log, log[-4000:]
    if any(hook.type == 'mmpretrain.BatchSamplerPreciseBNHook' for hook in cfg.get('custom_hooks', [])):
        assert 'Finish Precise BN, BN stats updated.' in log, log[-4000:]
    checkpoint = next(work_dir.glob('*_[12].pth'))  # iter_2.pth or epoch_1.pth

    import pic_plugin  # noqa: F401  (allow-lists the message hub of runner checkpoints under weights_only=True)
    state_dict = torch.load(checkpoint, weights_only=True)['state_dict']
    pretrained = backbone_tensors(exported_backbone, 'backbone.')
    loaded = backbone_tensors(state_dict, 'backbone.')
    loaded.update(backbone_tensors(state_dict, 'roi_head.shared_head.'))  # R50-C4: stage 4 is the box head
    extra_norm = {key: loaded.pop(key) for key in list(loaded) if key.startswith('norm.')}  # MoCo's BN after res5
    assert not extra_norm or extra_norm['norm.weight'].shape == (2048, )
    assert sorted(loaded) == sorted(pretrained)  # every pre-trained tensor has its place downstream
    frozen = cfg.model.backbone.get('frozen_stages', -1) == 4  # the linear probe
    # lr 0 leaves the parameters as loaded; BatchNorm statistics move in training unless the stages are frozen
    compared = [key for key in loaded if frozen or not re.search(r'running_|num_batches_tracked', key)]
    for key in compared:
        torch.testing.assert_close(loaded[key], pretrained[key], rtol=0, atol=0, msg=key)

    tested = run_cli([bin_path('mim'), 'test', package, tiny_config, '--checkpoint', checkpoint,
                      '--work-dir', tmp_path / 'test'], cwd=workspace)
    log = tested.stdout + tested.stderr
    assert tested.returncode == 0, log[-4000:]
    for metric in metrics:
        assert re.search(metric, log), (metric, log[-3000:])
