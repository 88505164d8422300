# PIC with ResNet-50 (PIC Sec. 2.1 and 3.1): one branch, a 2-layer MLP projection head (PIC Table 1,
# "two-layer FC head") and a cosine soft-max over 1,281,167 ImageNet-1k instance classes, tau = 0.2,
# computed over the K most recent instances; LazyCorrectedSGD (schedules/) corrects the rows it skipped.
model = dict(
    type='InstanceClassification',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    # zero_init_residual: neither paper fixes it; measured (README, "Learning quality": 3 seeds on the digits with
    # tools/analysis_tools/compare_methods.py), the last BN of each block zero-initialised costs PIC about 20 points
    # of kNN top-1, so it is off (as mmpretrain's MoCo v2 and BYOL configs; its SimCLR configs and ResNet default on)
    backbone=dict(type='ResNet', depth=50, norm_cfg=dict(type='SyncBN'), zero_init_residual=False),
    # Linear(2048, 2048)-BN-ReLU-Linear(2048, 128): PIC's 2-layer MLP projection head (Sec. 2.1, from SimCLR),
    # mmpretrain's MLP neck with BatchNorm between the layers.
    neck=dict(
        type='NonLinearNeck',
        in_channels=2048,
        hid_channels=2048,
        out_channels=128,
        num_layers=2,
        with_last_bn=False,
        with_avg_pool=True,
        norm_cfg=dict(type='SyncBN')),
    head=dict(
        type='InstanceClsHead',
        num_classes=1281167,  # ImageNet-1k train: one class per image
        in_channels=128,
        temperature=0.2,  # PIC Sec. 4.1: "tau = 0.2 could generally perform well"
        negatives='recent',  # recent-negative sampling (PIC Sec. 2.3) ...
        num_negatives=65536,  # ... with K = 2^16, the paper's default (Sec. 4.1, Table 2)
        init_std=0.01,  # the public PIC release's N(0, 0.01^2) rows
        placement='device'),  # 'host' keeps the 1.28M x 128 table (and momentum) in pinned host memory
)
