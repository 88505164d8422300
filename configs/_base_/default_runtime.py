# Runtime shared by every pic_plugin config. It is written here rather than inherited from
# 'mmpretrain::_base_/default_runtime.py': a cross-package base adds `_scope_` to every dict with a `type`,
# which mmengine then passes on to `default_collate` as an unexpected keyword argument.
default_scope = 'mmpretrain'
# Registers InstanceClsHead, SlidingWindowSampler, LazyCorrectedSGD, MemoryBankNCE, WeightedKNN, ...
custom_imports = dict(imports=['pic_plugin'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    # calls set_epoch() on the sampler, which SlidingWindowSampler needs to continue its stream
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # the kNN features' 2-D map and a retrieval grid at each validation, through the visualizer below; off by
    # default (a t-SNE of 2,000 points takes seconds): --cfg-options default_hooks.feature_pictures.enable=True
    feature_pictures=dict(type='FeaturePicturesHook', enable=False),
)
# Stop at once, with a clear message, when the head's row count differs from the training set size, and at the
# first NaN / inf loss (before it reaches a checkpoint); gather a sharded classifier's rows into each checkpoint.
custom_hooks = [dict(type='InstanceCountCheckHook'), dict(type='NaNGuardHook'), dict(type='ShardedTableHook')]

# mmengine's Runner, but a resume reads the checkpoint (the whole instance table) into host memory, not onto every
# GPU; tools/train.py and `mim train mmpretrain` build it (mmselfsup's train script ignores runner_type)
runner_type = 'mmpretrain.HostResumeRunner'
env_cfg = dict(
    # training crops have fixed sizes (224 px; 160 / 96 px with multi-crop): cuDNN times its convolution
    # algorithms once per shape and keeps the fastest
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
# Every scalar and picture (FeaturePicturesHook, tools/visualize_features.py) goes to each backend listed: uncomment
# TensorBoard (the tensorboard package; `tensorboard --logdir WORK_DIR`) or W&B (`pip install wandb`, `wandb login`).
vis_backends = [
    dict(type='LocalVisBackend'),
    # dict(type='TensorboardVisBackend'),
    # dict(type='WandbVisBackend', init_kwargs=dict(project='pic_plugin')),
]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=False, deterministic=False)
