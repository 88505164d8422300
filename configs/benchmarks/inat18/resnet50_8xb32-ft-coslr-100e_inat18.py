# iNaturalist 2018 fine-grained classification (full-classifier paper Table 9, PIC Table 8): fine-tune the whole PIC
# ResNet-50 plus a new 8,142-way linear classifier on train2018.json (437,513 images), report top-1 / top-5 on
# val2018.json (24,426 images). Data set: pic_plugin's INaturalist2018 (the official JSON files; layout in
# docs/evaluation.md).
# Neither paper (nor the PIC release) gives the fine-tuning recipe, so this one is an assumption: the supervised
# ImageNet ResNet-50 recipe (mmpretrain's imagenet_bs256_coslr schedule + its ImageNet pipelines) with BatchNorm
# trained and synchronised, the way MoCo fine-tunes for transfer (the supervised counterpart's hyper-parameters):
# SGD lr 0.1 x batch / 256, momentum 0.9, weight decay 1e-4, cosine decay over 100 epochs, RandomResizedCrop(224)
# + flip; resize 256 + center crop 224 for testing.
#
#   mim train mmpretrain configs/benchmarks/inat18/resnet50_8xb32-ft-coslr-100e_inat18.py --launcher pytorch \
#       --gpus 8 --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pic_r50_backbone.pth
_base_ = [
    '../../_base_/benchmarks/resnet50_pic-pre.py',
    '../../_base_/benchmarks/sgd_coslr_finetune.py',
]

num_classes = 8142  # iNat 2018 species; the category ids 0..8141 are the labels
model = dict(
    backbone=dict(norm_cfg=dict(type='SyncBN')),  # BatchNorm trained and synchronised across GPUs (MoCo's fine-tuning)
    head=dict(num_classes=num_classes))  # a new classifier, mmpretrain's default (normal) init

# The normalisation of pre-training (configs/pic_r50.py): ImageNet mean / std on RGB.
data_preprocessor = dict(
    num_classes=num_classes, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)

dataset_type = 'INaturalist2018'
data_root = 'data/inat2018/'
# mmpretrain's ImageNet pipelines (imagenet_bs32_pil_resize.py): crop scale 0.08-1, bilinear (PIL) resizing.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,  # x 8 GPUs = 256
    num_workers=8,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train2018.json', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='val2018.json', pipeline=test_pipeline,
                 test_mode=True),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))  # the tables report top-1 and top-5
# iNat 2018 has no public test labels; the papers report the validation set.
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# No warm-up (as the supervised schedule); `--auto-scale-lr` scales lr 0.1 linearly for another total batch size.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
train_cfg = dict(max_epochs=100)
