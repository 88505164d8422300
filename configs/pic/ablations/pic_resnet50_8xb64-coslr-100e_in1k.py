# PIC Table 4: 100 epochs with the sliding window; warm-up over epochs / 40, then cosine (the PIC release).
_base_ = ['../../pic_r50.py']
max_epochs = 100
warmup_epochs = max_epochs / 40
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0., by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
