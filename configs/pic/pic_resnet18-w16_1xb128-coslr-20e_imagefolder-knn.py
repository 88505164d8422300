# pic_resnet18-w16_1xb128-coslr-20e_imagefolder.py with the weighted-kNN evaluation (NPID Sec. 3.4) turned on, for
# when some images have labels: pre-training still reads the unlabelled folder, and a labelled split in
# mmpretrain's CustomDataset layout (sub-folders are classes, the same ones in both) is evaluated at the end:
#
#   labelled_root/train/<class>/*.png   reference images: their labels vote for their nearest neighbours
#   labelled_root/test/<class>/*.png    evaluated images: top-1 / top-5 of the vote
#
#   python tools/train.py configs/pic/pic_resnet18-w16_1xb128-coslr-20e_imagefolder-knn.py --cfg-options \
#       train_dataloader.dataset.data_root=/path/to/images \
#       val_dataloader.dataset.train.data_root=/path/to/labelled val_dataloader.dataset.test.data_root=/path/to/labelled
#
# `python tools/knn_eval.py THIS CHECKPOINT --cfg-options ...` (the same three options) scores a checkpoint with the
# backbone alone: the head's rows, which it does not build, are listed as unexpected keys of the checkpoint.
_base_ = ['./pic_resnet18-w16_1xb128-coslr-20e_digits.py']
data_root = 'data/my_images/'
labelled_root = 'data/my_labelled_images/'
model = dict(head=dict(num_classes='auto'))
# every step a full batch (BatchNorm cannot train on one image): a folder of at least batch_size images
train_dataloader = dict(drop_last=True,
                        dataset=dict(type='UnlabelledImageFolder', data_root=data_root, data_prefix=''))
# images of any size: the shorter side to 32 px, then the central 32 x 32
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=32, edge='short'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(train=dict(data_root=labelled_root, pipeline=test_pipeline),
                                   test=dict(data_root=labelled_root, pipeline=test_pipeline)))
test_dataloader = val_dataloader
