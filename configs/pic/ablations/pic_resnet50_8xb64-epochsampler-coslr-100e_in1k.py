# PIC Table 4: 100 epochs with the epoch-based scheduler.
_base_ = ['./pic_resnet50_8xb64-coslr-100e_in1k.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='KeyedDefaultSampler', shuffle=True))
