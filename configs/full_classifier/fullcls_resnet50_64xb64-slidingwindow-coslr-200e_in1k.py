# A mix selected by config alone: the full (sharded, smoothed, prior-initialised) classifier fed by PIC's
# sliding-window scheduler (W = 2^17, S = 2^14).
_base_ = ['./fullcls_resnet50_64xb64-coslr-200e_in1k.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='SlidingWindowSampler', window_size=131072, stride=16384))
