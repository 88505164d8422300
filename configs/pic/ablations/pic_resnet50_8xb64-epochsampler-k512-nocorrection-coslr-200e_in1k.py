# PIC Table 2, "w/o correction": K = 2^9, rows skipped by a step get neither weight decay nor momentum.
_base_ = ['./pic_resnet50_8xb64-epochsampler-k512-coslr-200e_in1k.py']
optim_wrapper = dict(correction=False)
