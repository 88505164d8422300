# ImageNet-1k with the public PIC release's multi-crop (scripts/PIC.sh: --aug MultiCrop --crop 0.08 --crop2 0.14
# --image-size 160 --image-size2 96 --num-crop 1 --num-crop2 3): per image one large crop of 160 px at scale
# 0.14-1 and three small crops of 96 px at scale 0.08-0.14, each followed by the rest of imagenet_bs64_pic.py's
# augmentation (flip, colour jitter, grayscale, blur). Needs model.num_large_views=1: the small crops score
# against the rows detached.
_base_ = ['./imagenet_bs64_pic.py']

crop, *augmentation = _base_.view_pipeline
large_view_pipeline = [dict(crop, scale=160, crop_ratio_range=(0.14, 1.0)), *augmentation]
small_view_pipeline = [dict(crop, scale=96, crop_ratio_range=(0.08, 0.14)), *augmentation]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    # seeded by the visit, as the single crop; the large crop first: model.num_large_views counts the views that
    # train the classifier rows
    dict(type='SeededByVisit',
         transforms=[dict(type='MultiView', num_views=[1, 3], transforms=[large_view_pipeline, small_view_pipeline])]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
