# The full one-million-way instance classifier (Liu et al.): ResNet-50, every one of the 1,281,167 classes in
# every step, the classifier rows sharded over the 64 GPUs (hybrid parallelism: data-parallel backbone and MLP,
# model-parallel classifier), a contrastive-prior initialisation and label smoothing on the top-k hardest
# classes. Batch 64 x 64 = 4096, two views per image (its Sec. 4, "for fair comparison").
_base_ = [
    '../_base_/models/pic_r50.py',
    '../_base_/datasets/imagenet_bs64_pic.py',
    '../_base_/schedules/fullcls_sgd_coslr_200e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    head=dict(
        negatives='full',  # all negatives in every step
        sharded=True,  # rows split evenly over the ranks, soft-max reduced across them
        # The paper's text gives tau and D without their values in our copy; tau = 0.2 and D = 128 are PIC's.
        temperature=0.2,
        label_smoothing=0.2,  # alpha of Eq. 3 (its Table 5 best: k = 100, alpha = 0.2)
        num_hard_classes=100))
train_dataloader = dict(
    sampler=dict(_delete_=True, type='KeyedDefaultSampler', shuffle=True),  # epoch-based, as the paper
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='SeededByVisit',
             transforms=[dict(type='MultiView', num_views=2, transforms=[{{_base_.view_pipeline}}])]),
        dict(type='PackInputs'),
    ]))
custom_hooks = _base_.custom_hooks + [  # default_runtime.py's checks and table gathering, then
    # rows <- L2-normalised projections of a random network with running BN, before the first step
    dict(type='ContrastivePriorHook'),
    # once per epoch, each row's k most similar rows become its smoothed targets (Eq. 2-3)
    dict(type='HardClassHook', k=100),
]
