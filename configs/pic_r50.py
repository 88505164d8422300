# PIC, ResNet-50, ImageNet-1k, 8 GPUs x 64 = 512, 200 epochs (PIC Sec. 4.1). The same experiment under
# mmpretrain's naming is configs/pic/pic_resnet50_8xb64-coslr-200e_in1k.py.
_base_ = [
    '_base_/models/pic_r50.py',
    '_base_/datasets/imagenet_bs64_pic.py',
    '_base_/schedules/pic_sgd_coslr_200e.py',
    '_base_/default_runtime.py',
]
