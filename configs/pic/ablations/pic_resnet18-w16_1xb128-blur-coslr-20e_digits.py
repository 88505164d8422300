# The PIC digits config with the ImageNet pipeline's Gaussian blur (sigma 0.1-2.0, p 0.5; imagenet_bs64_pic.py)
# added to each view. Compared over 3 seeds (README, "Learning quality"), it is 1.0 points above the digits config,
# one standard error of the difference: within noise, so the digits config keeps no blur. This config repeats it.
_base_ = ['../pic_resnet18-w16_1xb128-coslr-20e_digits.py']
train_dataloader = dict(dataset=dict(pipeline=_base_.blur_train_pipeline))
