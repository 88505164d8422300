# Pascal VOC 2012 semantic segmentation (train + SBD "aug" annotations, val mIoU) with mmsegmentation's FCN R50-D8
# recipe: 512x512 crops, batch 16 (4 GPUs x 4), 20k iterations, poly lr 0.01, SyncBN in the backbone and the heads.
# The backbone is the plain ResNet-50 that PIC pre-trains, not mmseg's default deep-stem ResNetV1c, whose stem
# would stay randomly initialised. Only the initialisation differs from mmseg's config. The log prints mIoU.
#
#   mim train mmseg configs/benchmarks/mmseg/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py --launcher pytorch --gpus 4 \
#       --cfg-options model.backbone.init_cfg.checkpoint=$BACKBONE
#   mim test mmseg configs/benchmarks/mmseg/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py --checkpoint WORK_DIR/iter_20000.pth
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py'
# torch >= 2.6 loads checkpoints with weights_only=True, which refuses the message hub of every mmengine runner
# checkpoint (so `mim test` and `--resume` fail); importing pic_plugin registers its exact allow-list.
custom_imports = dict(imports=['pic_plugin'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        type='ResNet',  # mmseg's plain ResNet (no deep stem), as in its 'r50b' configs
        # The backbone written by tools/model_converters/extract_backbone.py (docs/evaluation.md).
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.')))
