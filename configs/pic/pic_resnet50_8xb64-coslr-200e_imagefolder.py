# PIC with ResNet-50 on your own images, on GPUs: the recipe of pic_resnet50_8xb64-coslr-200e_in1k.py (8 x 64,
# 200 epochs, SimCLR-strength augmentation at 224 px, LazyCorrectedSGD) on any folder of images, nested or flat,
# without labels (_base_/datasets/imagefolder_bs64_pic.py):
#
#   bash tools/dist_train.sh configs/pic/pic_resnet50_8xb64-coslr-200e_imagefolder.py 8 \
#       --cfg-options train_dataloader.dataset.data_root=/path/to/images
#
# num_classes='auto': InstanceCountCheckHook gives the classifier one row per image found, before a checkpoint is
# loaded or resumed, and logs the count (`python tools/count_images.py CONFIG` prints it beforehand). Every step
# takes all N rows as negatives (the full soft-max, the upper bound of PIC's recent negatives, Table 2), the rows
# split over the GPUs as the full classifier does. Above about 10^6 images, PIC's recent negatives and sliding
# window keep a step's cost independent of N: model.head negatives='recent', num_negatives=65536, sharded=False
# and train_dataloader.sampler=dict(type='SlidingWindowSampler', window_size=131072, stride=16384), as pic_r50.py.
#
# Without labels there is no kNN evaluation. Where some images have labels, add it as
# pic_resnet18-w16_1xb128-coslr-20e_imagefolder-knn.py does, with this resolution's test pipeline:
# LoadImageFromFile, ResizeEdge(scale=256, edge='short'), CenterCrop(crop_size=224), PackInputs.
_base_ = [
    '../_base_/models/pic_r50.py',
    '../_base_/datasets/imagefolder_bs64_pic.py',
    '../_base_/schedules/pic_sgd_coslr_200e.py',
    '../_base_/default_runtime.py',
]
model = dict(head=dict(num_classes='auto', negatives='full', sharded=True))
