# The NPID digits config with the ImageNet pipeline's Gaussian blur added to each view (the digits pipeline's
# blur_train_pipeline), for the comparison over 3 seeds in README, "Learning quality".
_base_ = ['../npid_resnet18-w16_1xb128-coslr-20e_digits.py']
train_dataloader = dict(dataset=dict(pipeline=_base_.blur_train_pipeline))
