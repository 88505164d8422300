# NPID (Wu et al. 2018), ResNet-50, ImageNet-1k, 8 GPUs x 32 = 256, 200 epochs: the experiment of NPID Sec. 4.2
# (Table 2: 42.5% kNN top-1). "release" below is the authors' code, github.com/zhirongw/lemniscate.pytorch
# (main.py, lib/NCEAverage.py), for the values the paper does not state.
_base_ = ['_base_/default_runtime.py']

model = dict(
    type='InstanceClassification',  # one branch: backbone -> neck -> head, label = the image's index
    # NPID Sec. 3.4 votes with the normalised 128-d embedding; the linear probe uses the backbone
    knn_feature='projection',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # the release's ImageNet normalisation (0.485, 0.456, 0.406) x 255
        std=[58.395, 57.12, 57.375],  # (0.229, 0.224, 0.225) x 255
        to_rgb=False),  # the pipelines below hand over RGB arrays
    # The release trains torchvision's ResNet-50 under DataParallel: default init (no zero-init of the last BN
    # of each block) and BatchNorm statistics per GPU.
    backbone=dict(type='ResNet', depth=50, zero_init_residual=False),
    # NPID Sec. 3 / Fig. 2: the feature is "projected to a 128-dimensional space and L2 normalized"; the
    # release replaces ResNet's fc by one Linear(2048, 128) without BatchNorm. The head L2-normalises.
    neck=dict(type='LinearNeck', in_channels=2048, out_channels=128, gap_dim=2, norm_cfg=None),
    head=dict(
        type='MemoryBankNCE',
        num_classes=1281167,  # ImageNet-1k train: one instance class (one bank row) per image
        in_channels=128,  # D = 128 (NPID Sec. 4.2, Table 4)
        loss='nce',  # NCE (Sec. 3.2): the exact softmax over 1.28M rows is "cost prohibitive"
        num_noise=4096,  # m = 4,096 (Sec. 4.2: "NCE with m = 4,096 to balance performance and computing cost")
        temperature=0.07,  # tau = 0.07 (Sec. 4.2)
        bank_momentum=0.5,  # the release's --nce-m 0.5 (the paper does not give it)
        proximal_weight=0.,  # lambda of Eq. 9-10: off, as in the release (the paper gives no value)
        placement='device'),  # 'host' keeps the 1.28M x 128 bank (655 MB) in pinned host memory
)

# The release's main.py transforms, with the same torchvision operations (mmpretrain registers them as
# 'torchvision/...'; mmcv's own ColorJitter also fails here: its hue shift overflows uint8 under numpy 2):
# RandomResizedCrop(224, scale=(0.2, 1)), RandomGrayscale(p=0.2), ColorJitter(0.4, 0.4, 0.4, 0.4) always,
# horizontal flip.
view_pipeline = [
    dict(type='NumpyToPIL', to_rgb=True),  # LoadImageFromFile reads BGR
    dict(type='torchvision/RandomResizedCrop', size=224, scale=(0.2, 1.0)),
    dict(type='torchvision/RandomGrayscale', p=0.2),
    dict(type='torchvision/ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4),
    dict(type='torchvision/RandomHorizontalFlip'),
    dict(type='PILToNumpy', to_bgr=False),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=1, transforms=[view_pipeline]),
    dict(type='PackInputs'),  # keeps 'sample_idx' (the instance label) in the metainfo
]
train_dataloader = dict(
    batch_size=32,  # per GPU; 8 x 32 = 256, NPID Sec. 4.2 ("The batch size is 256")
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),  # the release shuffles each epoch
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNet', data_root='data/imagenet/', split='train', pipeline=train_pipeline))

# Weighted kNN (NPID Sec. 3.4: k = 200, tau = 0.07) of backbone features, the labelled training images voting
# for the validation images, with the release's test transform (resize 256, centre crop 224). It runs once,
# after the last epoch (1.33M images), and is what tools/knn_eval.py runs on a checkpoint.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NumpyToPIL', to_rgb=True),
    dict(type='torchvision/Resize', size=256),
    dict(type='torchvision/CenterCrop', size=224),
    dict(type='PILToNumpy', to_bgr=False),
    dict(type='PackInputs'),
]
val_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='KNNSplits',
        train=dict(type='ImageNet', data_root='data/imagenet/', split='train', pipeline=test_pipeline),
        test=dict(type='ImageNet', data_root='data/imagenet/', split='val', pipeline=test_pipeline)))
val_evaluator = dict(type='WeightedKNN', k=200, tau=0.07, device='cuda')
val_cfg = dict()

# NPID Sec. 4.2: "SGD with momentum", lr 0.03, "scaled down with coefficient 0.1 every 40 epochs after the first
# 120 epochs" (x0.1 at 120 and at 160), 200 epochs. Momentum 0.9 and weight decay 1e-4 are the release's main.py
# defaults (its CIFAR script, cifar.py, uses 5e-4). The bank has no parameters: a plain SGD covers the model.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[120, 160], gamma=0.1)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=200, val_interval=200)
# lr above is for 8 x 32 = 256; `--auto-scale-lr` rescales it for another total batch
auto_scale_lr = dict(base_batch_size=256)
