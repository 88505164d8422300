# PIC Table 3: sliding window W = 32768, stride S = 16384 (default W = 131072, S = 16384).
_base_ = ['../../pic_r50.py']
train_dataloader = dict(sampler=dict(window_size=32768, stride=16384))
