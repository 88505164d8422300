# PIC Table 2, "w. correction": recent-negative sampling with K = 2^14, epoch-based scheduler.
_base_ = ['./pic_resnet50_8xb64-epochsampler-coslr-200e_in1k.py']
model = dict(head=dict(num_negatives=16384))
