# PIC on the CPU in a few minutes: a 16-wide ResNet-18 (CIFAR stem) on 32x32 digits, 1,500 instance classes.
# Used by `make demo` and the tests; the recipe is pic_r50.py's, scaled down.
_base_ = [
    '../_base_/datasets/digits_bs128_pic.py',
    '../_base_/schedules/pic_sgd_coslr_200e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='InstanceClassification',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True),
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16),
    neck=dict(
        type='NonLinearNeck',
        in_channels=128,
        hid_channels=512,
        out_channels=128,
        num_layers=2,
        with_last_bn=False,
        with_avg_pool=True,
        norm_cfg=dict(type='BN1d')),
    head=dict(type='InstanceClsHead', num_classes=1500, in_channels=128, temperature=0.2),
)
# lr 0.03 x 128 / 256; warm-up over epochs / 40, then cosine (the recipe of pic_r50.py).
optim_wrapper = dict(optimizer=dict(lr=0.015))
max_epochs = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=max_epochs / 40,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - max_epochs / 40, eta_min=0., by_epoch=True,
         begin=max_epochs / 40, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_epochs))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(base_batch_size=128)
