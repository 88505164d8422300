# PIC Table 4: 1600 epochs with the sliding window, pic_r50.py's schedule at this length: warm-up over epochs / 40,
# then cosine to 0 (the PIC release).
_base_ = ['../../pic_r50.py']
max_epochs, warmup_epochs = 1600, 1600 / 40
param_scheduler = [dict(_base_.param_scheduler[0], end=warmup_epochs), dict(_base_.param_scheduler[1],
                   T_max=max_epochs - warmup_epochs, begin=warmup_epochs, end=max_epochs)]
train_cfg = dict(max_epochs=max_epochs)
