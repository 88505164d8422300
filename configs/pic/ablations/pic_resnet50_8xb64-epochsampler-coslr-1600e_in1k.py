# PIC Table 4: 1600 epochs with the epoch-based scheduler.
_base_ = ['./pic_resnet50_8xb64-coslr-1600e_in1k.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='KeyedDefaultSampler', shuffle=True))
