# NPID with ResNet-50 (NPID Sec. 3 and 4.2): one branch, a 128-d linear projection and a memory bank of the
# L2-normalised projections, one row per ImageNet-1k training image, trained with NCE. "release" below is the
# authors' code (linked in NPID Sec. 4.2), for the values the paper does not state.
model = dict(
    type='InstanceClassification',  # one branch: backbone -> neck -> head, label = the image's index
    # NPID Sec. 3.4 votes with the normalised 128-d embedding; the linear probe uses the backbone
    knn_feature='projection',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # the release's ImageNet normalisation (0.485, 0.456, 0.406) x 255
        std=[58.395, 57.12, 57.375],  # (0.229, 0.224, 0.225) x 255
        to_rgb=False),  # the pipelines (imagenet_bs32_npid.py) hand over RGB arrays
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
