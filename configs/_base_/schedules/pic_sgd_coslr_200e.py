# PIC's optimiser recipe (the public PIC release): one SGD for backbone, neck and classifier rows,
# momentum 0.9, weight decay 1e-4, lr = 0.03 x batch / 256 (0.06 for 512), linear warm-up over epochs / 40
# (5 of 200) from lr / 100, then cosine decay to 0, all per iteration.
# LazyCorrectedSGDConstructor builds LazyCorrectedSGD, which updates the instance rows (PIC Eq. 2-3) and leaves
# the rest to the SGD below; under --amp (type='AmpOptimWrapper') AmpLazyCorrectedSGD. On the CPU,
# --cfg-options optim_wrapper.dtype=bfloat16 trains under bfloat16 autocast.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='LazyCorrectedSGDConstructor',
    optimizer=dict(type='SGD', lr=0.06, momentum=0.9, weight_decay=1e-4),
    correction=True)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=195, eta_min=0., by_epoch=True, begin=5, end=200,
         convert_to_iter_based=True),
]
# mmengine's EpochBasedTrainLoop, stopping first with a clear error if a data folder is missing or empty
train_cfg = dict(type='CheckedEpochBasedTrainLoop', max_epochs=200)
# lr above is for 8 x 64; `--auto-scale-lr` rescales it for another total batch
auto_scale_lr = dict(base_batch_size=512)
