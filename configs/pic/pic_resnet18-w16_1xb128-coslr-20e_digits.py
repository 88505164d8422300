# PIC on the CPU in a few minutes: a 16-wide ResNet-18 (CIFAR stem) on 32x32 digits, 1,500 instance classes.
# Used by `make demo` and the tests; the recipe is pic_r50.py's, scaled down.
_base_ = [
    '../_base_/models/pic_r50.py',
    '../_base_/datasets/digits_bs128_pic.py',
    '../_base_/schedules/pic_sgd_coslr_200e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3),
    # no zero-init of each block's last BN (mmpretrain's default), as pic_r50.py: measured over 3 seeds (README,
    # "Learning quality"), zero-init costs PIC, NPID and the full classifier kNN top-1 on these digits
    backbone=dict(_delete_=True, type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16,
                  zero_init_residual=False),
    # the 2-layer MLP projection head (PIC Sec. 2.1) with plain (single-process) BatchNorm between its layers, 512
    # wide: measured over 3 seeds (README, "Learning quality"), 512 is ahead of 128 and 2048 for PIC (and level with
    # 128 for the full classifier), and BatchNorm ahead of LayerNorm and of a second BatchNorm after the last layer
    neck=dict(in_channels=128, hid_channels=512, norm_cfg=dict(type='BN1d')),
    # the cosine soft-max over all 1,500 rows in every step (the head's defaults: no sampling, rows N(0, 0.01^2))
    head=dict(_delete_=True, type='InstanceClsHead', num_classes=1500, in_channels=128, temperature=0.2),
)
# lr 0.03 x 128 / 256; warm-up over epochs / 40, then cosine (the recipe of pic_r50.py).
optim_wrapper = dict(optimizer=dict(lr=0.015))
max_epochs = 20
param_scheduler = [dict(_base_.param_scheduler[0], end=max_epochs / 40), dict(_base_.param_scheduler[1],
                   T_max=max_epochs - max_epochs / 40, begin=max_epochs / 40, end=max_epochs)]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_epochs))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(base_batch_size=128)
