# PIC Table 2, "full": the soft-max runs over all 1,281,167 rows in every step (no sampling, nothing skipped).
_base_ = ['./pic_resnet50_8xb64-epochsampler-coslr-200e_in1k.py']
model = dict(head=dict(negatives='full'))
