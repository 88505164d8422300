# NPID (Wu et al. 2018), ResNet-18 (CIFAR variant), CIFAR-10, 1 GPU x 128, 200 epochs: the setting of NPID
# Sec. 4.1 / Table 1 (NCE m = 4,096: 80.4% kNN top-1; loss='softmax' is the exact row, 80.8%). "release" below
# is the CIFAR script of the authors' code (linked in NPID Sec. 4.2), for what the paper omits.
#
# Data: mmpretrain's CIFAR10 reads the python version of CIFAR-10 from data/cifar10/cifar-10-batches-py/
# (data_batch_1 .. data_batch_5, test_batch, batches.meta: the extracted cifar-10-python.tar.gz). Nothing is
# downloaded at run time; a missing folder stops with mmpretrain's message naming it.
_base_ = [
    '../_base_/datasets/weighted_knn_bs256.py',
    '../_base_/schedules/npid_sgd_steplr_200e.py',
    '../_base_/default_runtime.py',
]

dataset_type = 'CIFAR10'
data_root = 'data/cifar10/'

model = dict(
    type='InstanceClassification',
    knn_feature='projection',  # NPID Sec. 3.4 / 4.1: the kNN votes with the normalised 128-d embedding
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[125.307, 122.961, 113.8575],  # the release's (0.4914, 0.4822, 0.4465) x 255
        std=[51.5865, 50.847, 51.255],  # the release's (0.2023, 0.1994, 0.2010) x 255
        to_rgb=False),  # CIFAR10 yields RGB arrays already
    # "We use ResNet18 as the backbone network" (Sec. 4.1): the release's CIFAR ResNet-18 (3x3 stem, no max-pool)
    # with the release's default init: no zero-init of each block's last BN (mmpretrain's ResNet default)
    backbone=dict(type='ResNet_CIFAR', depth=18, zero_init_residual=False),
    # "its output features mapped into 128-dimensional vectors" (Sec. 4.1): one Linear(512, 128), no BatchNorm
    neck=dict(type='LinearNeck', in_channels=512, out_channels=128, gap_dim=2, norm_cfg=None),
    head=dict(
        type='MemoryBankNCE',
        num_classes=50000,  # CIFAR-10 train: one instance class per image
        in_channels=128,
        loss='nce',  # Table 1's NCE rows; 'softmax' gives the exact non-parametric softmax (Eq. 2)
        num_noise=4096,  # m = 4,096 (Table 1; also the release's --nce-k)
        temperature=0.07,  # tau = 0.07 (Sec. 3.4 and 4.2; the release defaults to 0.1)
        bank_momentum=0.5,  # the release's --nce-m 0.5
        proximal_weight=0.),  # off, as in the release
)

# The release's train transform, with the same torchvision operations (mmpretrain registers them as
# 'torchvision/...'; mmcv's own ColorJitter also fails here: its hue shift overflows uint8 under numpy 2):
# RandomResizedCrop(32, scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.4) always, RandomGrayscale(p=0.2), no flip.
view_pipeline = [
    dict(type='NumpyToPIL', to_rgb=False),  # CIFAR10 arrays are RGB already
    dict(type='torchvision/RandomResizedCrop', size=32, scale=(0.2, 1.0)),
    dict(type='torchvision/ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4),
    dict(type='torchvision/RandomGrayscale', p=0.2),
    dict(type='PILToNumpy', to_bgr=False),
]
train_pipeline = [
    dict(type='SeededByVisit', transforms=[dict(type='MultiView', num_views=1, transforms=[view_pipeline])]),
    dict(type='PackInputs'),  # keeps 'sample_idx' (the instance label) in the metainfo
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,  # the release's CIFAR script
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='KeyedDefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', download=False, pipeline=train_pipeline))

# Weighted kNN (Sec. 3.4, k = 200, tau = 0.07; weighted_knn_bs256.py) of the normalised projections: the 50,000
# labelled training images vote for the 10,000 test images. The release evaluates every epoch; here every 10 epochs
# and after the last.
val_dataloader = dict(
    num_workers=2,
    dataset=dict(
        train=dict(type=dataset_type, data_root=data_root, split='train', download=False, pipeline=test_pipeline),
        test=dict(type=dataset_type, data_root=data_root, split='test', download=False, pipeline=test_pipeline)))

# The ImageNet schedule of NPID (npid_sgd_steplr_200e.py: SGD lr 0.03, momentum 0.9, 200 epochs, lr x0.1 at epochs
# 120 and 160) is also the release's CIFAR one (its lr * 0.1 ** ((epoch - 80) // 40) from epoch 80), but for its
# weight decay of 5e-4 and the batch of 128.
optim_wrapper = dict(optimizer=dict(weight_decay=5e-4))
train_cfg = dict(val_interval=10)
auto_scale_lr = dict(base_batch_size=128)
