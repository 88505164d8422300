# ImageNet-1k, one augmented view per image per step (PIC's one branch). Augmentation of SimCLR strength
# (PIC Sec. 4.1 follows [SimCLR, MoCo v2]; the release uses these values): random resized crop 224 (scale
# 0.08-1), colour jitter 0.8/0.8/0.8/0.2 applied with p 0.8, grayscale p 0.2, Gaussian blur p 0.5, flip p 0.5.
dataset_type = 'ImageNet'
data_root = 'data/imagenet/'

view_pipeline = [
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.08, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    # torchvision's ColorJitter (as the release); mmcv's overflows uint8 on a negative hue shift under numpy 2
    dict(
        type='RandomApply',
        transforms=[
            dict(type='NumpyToPIL', to_rgb=True),  # the pipeline carries BGR, as LoadImageFromFile reads it
            dict(type='torchvision/ColorJitter', brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2),
            dict(type='PILToNumpy', to_bgr=True),
        ],
        prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # seeded by the visit (the sampler's VisitKey), so a view does not depend on the loader's workers, their
    # persistence, the number of ranks or a resume
    dict(type='SeededByVisit', transforms=[dict(type='MultiView', num_views=1, transforms=[view_pipeline])]),
    dict(type='PackInputs'),  # keeps 'sample_idx' (the instance label) in the metainfo
]
train_dataloader = dict(
    batch_size=64,  # per GPU; 8 GPUs x 64 = 512 (PIC Sec. 4.1)
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    # PIC Sec. 2.2 / 4.1: windows of W = 2^17 instances sliding by S = 2^14 (gamma = 1 - S/W = 87.5% of the
    # instances are revisited after about D = W samples). An "epoch" stays N samples (PIC footnote 2).
    sampler=dict(type='SlidingWindowSampler', window_size=131072, stride=16384),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
