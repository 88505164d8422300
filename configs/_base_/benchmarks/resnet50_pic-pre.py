# The classification benchmarks of configs/benchmarks/ that run in mmpretrain's scope (linear probe, fine-tuning):
# mmpretrain's ResNet-50 classifier (ImageClassifier: backbone, global average pooling, linear head) and runtime,
# the backbone started from the pre-trained one that tools/model_converters/extract_backbone.py writes
# (docs/evaluation.md; set it with --cfg-options model.backbone.init_cfg.checkpoint=...).
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/default_runtime.py',
]
# torch >= 2.6 loads checkpoints with weights_only=True, which refuses the message hub of every mmengine runner
# checkpoint (so `mim test` and `--resume` fail); importing pic_plugin registers its exact allow-list (and
# pic_plugin's data sets, INaturalist2018 among them).
custom_imports = dict(imports=['pic_plugin'], allow_failed_imports=False)

# The whole pre-training checkpoint loads too, through the same prefix.
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.')))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3))
