# The CPU digits run with everything of PIC at scale switched on: sliding window (W/S = 8 as the paper's
# 131072 / 16384, gamma = 87.5%), recent negatives (K = 256 of 1,500 rows) and LazyCorrectedSGD's correction.
_base_ = ['./pic_resnet18-w16_1xb128-coslr-20e_digits.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='SlidingWindowSampler', window_size=512, stride=64))
model = dict(head=dict(negatives='recent', num_negatives=256))
