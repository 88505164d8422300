# ImageNet-1k for NPID, one augmented view per image per step, with the transforms of the authors' release (its
# ImageNet training script) and the same torchvision operations (mmpretrain registers them as 'torchvision/...';
# mmcv's own ColorJitter also fails here: its hue shift overflows uint8 under numpy 2):
# RandomResizedCrop(224, scale=(0.2, 1)), RandomGrayscale(p=0.2), ColorJitter(0.4, 0.4, 0.4, 0.4) always,
# horizontal flip.
_base_ = ['./weighted_knn_bs256.py']

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
    dict(type='SeededByVisit', transforms=[dict(type='MultiView', num_views=1, transforms=[view_pipeline])]),
    dict(type='PackInputs'),  # keeps 'sample_idx' (the instance label) in the metainfo
]
train_dataloader = dict(
    batch_size=32,  # per GPU; 8 x 32 = 256, NPID Sec. 4.2 ("The batch size is 256")
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='KeyedDefaultSampler', shuffle=True),  # the release shuffles each epoch
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNet', data_root='data/imagenet/', split='train', pipeline=train_pipeline))

# Weighted kNN (NPID Sec. 3.4; weighted_knn_bs256.py), the labelled training images voting for the validation
# images, with the release's test transform (resize 256, centre crop 224). The kNN of 1.33M images runs once,
# after the last epoch (npid_sgd_steplr_200e.py), and is what tools/knn_eval.py runs on a checkpoint.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='NumpyToPIL', to_rgb=True),
    dict(type='torchvision/Resize', size=256),
    dict(type='torchvision/CenterCrop', size=224),
    dict(type='PILToNumpy', to_bgr=False),
    dict(type='PackInputs'),
]
val_dataloader = dict(
    num_workers=8,
    dataset=dict(
        train=dict(type='ImageNet', data_root='data/imagenet/', split='train', pipeline=test_pipeline),
        test=dict(type='ImageNet', data_root='data/imagenet/', split='val', pipeline=test_pipeline)))
val_evaluator = dict(device='cuda')
