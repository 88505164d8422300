# NPID Sec. 4.2: "SGD with momentum", lr 0.03, "scaled down with coefficient 0.1 every 40 epochs after the first
# 120 epochs" (x0.1 at 120 and at 160), 200 epochs. Momentum 0.9 and weight decay 1e-4 are the defaults of the
# authors' ImageNet script (their CIFAR one uses 5e-4). The bank has no parameters: the SGD covers the model. The
# constructor gives NPID the same mixed-precision switches as PIC (optim_wrapper.dtype=bfloat16, --amp).
optim_wrapper = dict(type='OptimWrapper', constructor='LazyCorrectedSGDConstructor',
                     optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[120, 160], gamma=0.1)]
# the weighted kNN once, after the last epoch
# mmengine's EpochBasedTrainLoop, stopping first with a clear error if a data folder is missing or empty
train_cfg = dict(type='CheckedEpochBasedTrainLoop', max_epochs=200, val_interval=200)
# lr above is for 8 x 32 = 256; `--auto-scale-lr` rescales it for another total batch
auto_scale_lr = dict(base_batch_size=256)
