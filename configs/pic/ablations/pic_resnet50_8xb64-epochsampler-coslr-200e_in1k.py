# PIC Table 2/4 baseline: the ordinary epoch-based data scheduler instead of the sliding window.
_base_ = ['../../pic_r50.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='KeyedDefaultSampler', shuffle=True))
