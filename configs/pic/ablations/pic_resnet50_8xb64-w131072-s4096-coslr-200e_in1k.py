# PIC Table 3: sliding window W = 131072, stride S = 4096 (default W = 131072, S = 16384).
_base_ = ['../../pic_r50.py']
train_dataloader = dict(sampler=dict(window_size=131072, stride=4096))
