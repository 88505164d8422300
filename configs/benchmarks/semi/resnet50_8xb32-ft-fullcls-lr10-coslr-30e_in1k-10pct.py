# Semi-supervised ImageNet-1k, 10% labels, with the full-classifier paper's learning rates (its Table 7): "For 10%
# labels, the lrs for the backbone and the classifier are set to 0.001 and 10, respectively (Li et al. 2020)".
# Everything else is the SimCLR recipe of the inherited config (30 epochs); read `accuracy/top5`.
# The base lr is the classifier's; the backbone's is lr_mult x lr = 0.001. `--auto-scale-lr` scales both.
#
#   mim train mmpretrain configs/benchmarks/semi/resnet50_8xb32-ft-fullcls-lr10-coslr-30e_in1k-10pct.py \
#       --launcher pytorch --gpus 8 --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pic_r50_backbone.pth
_base_ = './resnet50_8xb32-ft-nesterov-coslr-30e_in1k-10pct.py'

optim_wrapper = dict(
    optimizer=dict(lr=10.), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.001 / 10.)}))
