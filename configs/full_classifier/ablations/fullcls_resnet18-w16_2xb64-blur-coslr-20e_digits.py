# The full classifier's digits config with the ImageNet pipeline's Gaussian blur added to each view (the digits
# pipeline's blur_train_pipeline), for the comparison over 3 seeds in README, "Learning quality".
_base_ = ['../fullcls_resnet18-w16_2xb64-coslr-20e_digits.py']
train_dataloader = dict(dataset=dict(pipeline=_base_.blur_train_pipeline))
