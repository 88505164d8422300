# The PIC release's multi-crop on the CPU digits (pic_resnet18-w16_1xb128-coslr-20e_digits.py otherwise): one
# 32 px large crop and three 16 px small ones per image. Scales as the release's: it splits the single crop's
# scale range 0.08-1 at 0.14 (large crops 0.14-1, small crops 0.08-0.14, the split 1.75x the lower bound), so the
# digits' 0.3-1 is split at 0.5 (large 0.5-1, small 0.3-0.5); the small crops are half the large one's side (the
# release: 96 / 160). Each crop is followed by the rest of the digits' augmentation (colour jitter 0.4/0.4 at
# p 0.8).
_base_ = ['./pic_resnet18-w16_1xb128-coslr-20e_digits.py']

crop, *augmentation = _base_.view_pipeline
large_view_pipeline = [dict(crop, crop_ratio_range=(0.5, 1.0)), *augmentation]
small_view_pipeline = [dict(crop, scale=16, crop_ratio_range=(0.3, 0.5)), *augmentation]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='SeededByVisit',
         transforms=[dict(type='MultiView', num_views=[1, 3], transforms=[large_view_pipeline, small_view_pipeline])]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# the large crop trains the rows; the small crops score against them detached (the mean over all four crops)
model = dict(num_large_views=1)
