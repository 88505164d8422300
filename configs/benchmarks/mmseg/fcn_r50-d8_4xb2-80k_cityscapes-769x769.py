# Cityscapes semantic segmentation (PIC Table 8, val mIoU) with mmsegmentation's FCN R50-D8 recipe: 769x769 crops,
# batch 8 (4 GPUs x 2), 80k iterations, poly lr 0.01, SyncBN in the backbone and the heads. The backbone is the
# plain ResNet-50 that PIC pre-trains (mmseg's 'r50b' variant), not mmseg's default deep-stem ResNetV1c, whose
# stem would stay randomly initialised. Only the initialisation differs from mmseg's config. The log prints mIoU.
#
#   mim train mmseg configs/benchmarks/mmseg/fcn_r50-d8_4xb2-80k_cityscapes-769x769.py --launcher pytorch --gpus 4 \
#       --cfg-options model.backbone.init_cfg.checkpoint=$BACKBONE
#   mim test mmseg configs/benchmarks/mmseg/fcn_r50-d8_4xb2-80k_cityscapes-769x769.py \
#       --checkpoint WORK_DIR/iter_80000.pth
_base_ = 'mmseg::fcn/fcn_r50b-d8_4xb2-80k_cityscapes-769x769.py'
# torch >= 2.6 loads checkpoints with weights_only=True, which refuses the message hub of every mmengine runner
# checkpoint (so `mim test` and `--resume` fail); importing pic_plugin registers its exact allow-list.
custom_imports = dict(imports=['pic_plugin'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        # The backbone written by tools/model_converters/extract_backbone.py (docs/evaluation.md).
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.')))
