# Semi-supervised ImageNet-1k, 1% labels, with the full-classifier paper's learning rates (its Table 7): "For 1%
# labels, we train the backbone with a lr of 0.001 and the classifier with a lr of 15" (following Li et al. 2020,
# PCL). The paper gives nothing else, so everything else is the SimCLR recipe of the inherited config (Nesterov
# SGD, no weight decay, cosine decay, 60 epochs, zero-initialised classifier, SyncBN); read `accuracy/top5`.
# The base lr is the classifier's; the backbone's is lr_mult x lr = 0.001. `--auto-scale-lr` scales both.
#
#   mim train mmpretrain configs/benchmarks/semi/resnet50_8xb32-ft-fullcls-lr15-coslr-60e_in1k-1pct.py \
#       --launcher pytorch --gpus 8 --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pic_r50_backbone.pth
_base_ = './resnet50_8xb32-ft-nesterov-coslr-60e_in1k-1pct.py'

optim_wrapper = dict(
    optimizer=dict(lr=15.), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.001 / 15.)}))
