# The full classifier's optimiser (Liu et al., "Implementation details"): SGD, momentum 0.9, weight decay 1e-4,
# lr 0.48 for the total batch of 4096, 10 epochs of linear warm-up, then cosine annealing. The sharded rows are
# trained by LazyCorrectedSGD (built by its constructor, AmpLazyCorrectedSGD under --amp); in the full mode every
# row is used every step, so it is plain SGD for them.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='LazyCorrectedSGDConstructor',
    optimizer=dict(type='SGD', lr=0.48, momentum=0.9, weight_decay=1e-4),
    correction=True)
max_epochs = 200  # the length of the paper's ablations (its Tables 2-5)
warmup_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0., by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
# mmengine's EpochBasedTrainLoop, stopping first with a clear error if a data folder is missing or empty
train_cfg = dict(type='CheckedEpochBasedTrainLoop', max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=4096)
