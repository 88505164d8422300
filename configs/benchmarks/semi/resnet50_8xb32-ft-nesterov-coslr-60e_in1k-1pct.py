# Semi-supervised ImageNet-1k (PIC Table 7): fine-tune the whole PIC ResNet-50 plus a new linear classifier on
# 1% of the labelled training images (12,811, SimCLR's subset), evaluate on the full validation set.
# PIC Table 7 reports TOP-5 accuracy (its SimCLR row, 75.5 / 87.8, is SimCLR's top-5); the log prints both.
# Neither the paper text in this repository nor the PIC release gives a fine-tuning recipe; Table 7 compares
# with SimCLR's numbers, so this is SimCLR's (Chen et al. 2020, Appendix B.5): Nesterov SGD, momentum 0.9,
# lr 0.05 x batch / 256 without warm-up, no weight decay, cosine decay, 60 epochs on 1% (30 on 10%),
# RandomResizedCrop + flip only, a zero-initialised classifier, BatchNorm trained (SyncBN across GPUs).
#
# Label file: SimCLR's 1percent.txt lists file names (n01440764_10026.JPEG); keep those lines of mmpretrain's
# meta/train.txt:  grep -Fwf 1percent.txt data/imagenet/meta/train.txt > data/imagenet/meta/train_1percent.txt
#
#   mim train mmpretrain configs/benchmarks/semi/resnet50_8xb32-ft-nesterov-coslr-60e_in1k-1pct.py \
#       --launcher pytorch --gpus 8 --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pic_r50_backbone.pth
_base_ = [
    '../../_base_/benchmarks/resnet50_pic-pre.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    '../../_base_/benchmarks/sgd_coslr_finetune.py',
]
model = dict(
    backbone=dict(norm_cfg=dict(type='SyncBN')),
    head=dict(init_cfg=dict(type='Constant', layer='Linear', val=0.)))  # SimCLR's zero_init_logits_layer

train_dataloader = dict(dataset=dict(ann_file='meta/train_1percent.txt'))

# `--auto-scale-lr` applies SimCLR's linear rule for another total batch size (4096 -> lr 0.8).
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.))
train_cfg = dict(max_epochs=60)
