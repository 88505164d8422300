# Any folder of images, nested or flat, without labels: every image file under data_root, at any depth, is an
# instance class of its own (UnlabelledImageFolder; sub-folders are not read as classes). The augmentation,
# batch and loader of the ImageNet recipe (imagenet_bs64_pic.py), in shuffled epochs: the sliding window
# (PIC Sec. 2.2) needs at least W = 2^17 images. Every step trains on a full batch (drop_last: BatchNorm cannot
# train on a last batch of one image), so the folder needs at least batch_size x GPUs images. No labels, so no
# kNN validation.
_base_ = ['./imagenet_bs64_pic.py']
dataset_type = 'UnlabelledImageFolder'
data_root = 'data/my_images/'  # set it with --cfg-options train_dataloader.dataset.data_root=/path/to/images

train_dataloader = dict(
    drop_last=True,
    sampler=dict(_delete_=True, type='KeyedDefaultSampler', shuffle=True),
    dataset=dict(_delete_=True, type=dataset_type, data_root=data_root, pipeline={{_base_.train_pipeline}}))
val_dataloader = None
val_cfg = None
val_evaluator = None
