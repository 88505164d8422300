# COCO detection and instance segmentation (MoCo's protocol, He et al. 2020, Sec. 4.2 / Table 5): Mask R-CNN
# R50-FPN, 1x schedule (12 epochs, batch 16 = 8 GPUs x 2, lr 0.02), multi-scale training (short side 640-800),
# BatchNorm trained and synchronised (SyncBN) in the backbone, the FPN and the heads (4conv1fc box head, mask head),
# no frozen stage; input normalised as in pre-training. The log prints coco/bbox_mAP and coco/segm_mAP.
#
#   mim train mmdet configs/benchmarks/mmdet/mask-rcnn_r50-fpn_ms-1x_coco.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=$BACKBONE
#   mim test mmdet configs/benchmarks/mmdet/mask-rcnn_r50-fpn_ms-1x_coco.py --checkpoint WORK_DIR/epoch_12.pth
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
# torch >= 2.6 loads checkpoints with weights_only=True, which refuses the message hub of every mmengine runner
# checkpoint (so `mim test` and `--resume` fail); importing pic_plugin registers its exact allow-list.
custom_imports = dict(imports=['pic_plugin'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        # The backbone written by tools/model_converters/extract_backbone.py (docs/evaluation.md).
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.')),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768),
                                            (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
