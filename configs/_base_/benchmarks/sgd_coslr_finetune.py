# The schedule of the fine-tuning benchmarks (semi-supervised ImageNet, iNaturalist 2018): the learning rate decays
# by cosine to 0, without warm-up and per iteration, over train_cfg.max_epochs, which each config sets (a
# scheduler's `end`, and with it T_max, defaults to it); validation every 10 epochs. The optimiser is each config's.
param_scheduler = dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, convert_to_iter_based=True)
train_cfg = dict(by_epoch=True, val_interval=10)
val_cfg = dict()
test_cfg = dict()
# 8 GPUs x 32; `--auto-scale-lr` scales the lr linearly for another total batch size.
auto_scale_lr = dict(base_batch_size=256)
