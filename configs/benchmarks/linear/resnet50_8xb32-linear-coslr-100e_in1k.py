# ImageNet-1k linear probe of a PIC ResNet-50 (PIC Sec. 4.1 "linear classification protocol with frozen
# pre-trained features"; Tables 1-6): a linear classifier on the frozen, globally pooled backbone.
# The recipe is the linear stage of the PIC release with its default options: SGD lr 30,
# momentum 0.9, no weight decay, total batch 256, 100 epochs, 5 warm-up epochs from lr / 100, then cosine decay to
# 1e-6; RandomResizedCrop(224, scale 0.08-1) + flip for training, resize 256 + center crop 224 for testing.
# One difference: the release keeps the frozen backbone's BatchNorm in training mode; here the frozen stages are
# in eval mode (mmpretrain's frozen_stages, MoCo's protocol), as in mmpretrain's own benchmark configs.
#
#   mim train mmpretrain configs/benchmarks/linear/resnet50_8xb32-linear-coslr-100e_in1k.py --launcher pytorch \
#       --gpus 8 --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pic_r50_backbone.pth
_base_ = [
    '../../_base_/benchmarks/resnet50_pic-pre.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_sgd_steplr_100e.py',
]
model = dict(backbone=dict(frozen_stages=4))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=30., momentum=0.9, weight_decay=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=95, eta_min=1e-6, by_epoch=True, begin=5, end=100,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=100, val_interval=10)
# 8 GPUs x 32; `--auto-scale-lr` scales lr 30 linearly for another total batch size.
auto_scale_lr = dict(base_batch_size=256)
