# A small real-image set for CPU runs: scikit-learn's 1,797 handwritten digits (8x8, upsampled to 32x32 PNGs by
# tools/prepare_digits.py), 1,500 for training and 297 held out, in mmpretrain's CustomDataset folder layout.
# Training ignores the digit labels (each image is its own class); the weighted kNN uses them.
_base_ = ['./weighted_knn_bs256.py']
dataset_type = 'CustomDataset'
data_root = 'data/digits/'

# Measured over 3 seeds for PIC, NPID and the full classifier (README, "Learning quality"): no other crop scale
# (ImageNet's 0.08-1), jitter (none, 0.8) or the ImageNet pipeline's Gaussian blur (blur_train_pipeline below, the
# configs/*/ablations/*blur*_digits.py) beats this augmentation by 2 standard errors.
view_pipeline = [
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.3, 1.0), backend='pillow'),
    dict(
        type='RandomApply',
        transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0., hue=0.)],
        prob=0.8),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # seeded by the visit (the sampler's VisitKey), so a view does not depend on the loader's workers, their
    # persistence, the number of ranks or a resume
    dict(type='SeededByVisit', transforms=[dict(type='MultiView', num_views=1, transforms=[view_pipeline])]),
    dict(type='PackInputs'),
]
# The same with the ImageNet pipeline's Gaussian blur (sigma 0.1-2.0, p 0.5; imagenet_bs64_pic.py) added to each
# view: what the blur ablations (configs/*/ablations/*blur*_digits.py) train with.
blur_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SeededByVisit', transforms=[dict(type='MultiView', num_views=1, transforms=[view_pipeline + [
        dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5)]])]),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='KeyedDefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', pipeline=train_pipeline))

# Validation = weighted kNN (NPID Sec. 3.4; weighted_knn_bs256.py) of backbone features: the labelled training
# images vote for the held-out ones. Written out in full (the kNN piece's loader with the two splits of this data
# set) because `tools/test.py` / `mim test` evaluate a checkpoint the same way, with the same loader.
val_dataloader = dict(
    _base_.val_dataloader,
    num_workers=2,
    dataset=dict(
        _base_.val_dataloader.dataset,
        train=dict(type=dataset_type, data_root=data_root, data_prefix='train', pipeline=test_pipeline),
        test=dict(type=dataset_type, data_root=data_root, data_prefix='test', pipeline=test_pipeline)))
test_dataloader = val_dataloader
test_evaluator = _base_.val_evaluator
test_cfg = dict()
