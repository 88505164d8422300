# Pascal VOC detection (PIC Table 8: AP, AP50, AP75 on VOC07 test) with MoCo's protocol (He et al. 2020,
# Sec. 4.2, and its detectron2 config for VOC): Faster R-CNN R50-C4 fine-tuned on VOC07+12
# trainval for 24k iterations at batch 16 (8 GPUs x 2), lr 0.02 with 100 warm-up iterations and x0.1 at 18k and
# 22k, multi-scale training (short side 480-800) and 800 at test; BatchNorm trained and synchronised (SyncBN) in
# the backbone and in the res5 box head, no frozen stage; input normalised as in pre-training (RGB, ImageNet
# mean / std). AP is COCO-style (mean over IoU 0.50:0.95) with VOC07's 11-point AP, as detectron2's VOC07
# evaluator; the log prints pascal_voc/mAP (= AP), pascal_voc/AP50 and pascal_voc/AP75.
# MoCo's R50-C4 base config also has two BatchNorm details, both from the host packages: the res5 box head
# is followed by one more (Sync)BN (detectron2's Res5ROIHeadsExtraNorm = mmpretrain's ResLayerExtraNorm, registered
# in mmdet), and the BN statistics are recomputed on 200 batches of 16 training images after the last iteration
# (detectron2's TEST.PRECISE_BN = mmpretrain's PreciseBNHook, whose pic_plugin subclass reads the batch size of
# mmdet's batch sampler), before the final checkpoint is written.
#
#   mim train mmdet configs/benchmarks/mmdet/faster-rcnn_r50-c4_ms-24k_voc0712.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=$BACKBONE \
#                     model.roi_head.shared_head.init_cfg.checkpoint=$BACKBONE
#   mim test mmdet configs/benchmarks/mmdet/faster-rcnn_r50-c4_ms-24k_voc0712.py --checkpoint WORK_DIR/iter_24000.pth
_base_ = 'mmdet::pascal_voc/faster-rcnn_r50-caffe-c4_ms-18k_voc0712.py'
# torch >= 2.6 loads checkpoints with weights_only=True, which refuses the message hub of every mmengine runner
# checkpoint (so `mim test` and `--resume` fail); importing pic_plugin registers its exact allow-list.
custom_imports = dict(imports=['pic_plugin', 'mmpretrain.models.utils.res_layer_extra_norm'],
                      allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        # The backbone written by tools/model_converters/extract_backbone.py (docs/evaluation.md). Stages 1-3.
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.')),
    roi_head=dict(
        shared_head=dict(
            type='ResLayerExtraNorm',
            norm_cfg=norm_cfg,
            norm_eval=False,
            style='pytorch',
            # The same file: the C4 box head is the backbone's stage 4 ('backbone.layer4.*' -> 'layer4.*').
            init_cfg=dict(type='Pretrained', checkpoint='work_dirs/pic_r50_backbone.pth', prefix='backbone.'))))

# VOC2007 and VOC2012 differ in metainfo['dataset_type']; without ignoring that key, mmdet's ConcatDataset turns
# the metainfo into a list of both, which the checkpoints then store as dataset_meta and mmdet's init_detector
# cannot read. mmdet's voc0712.py base ignores it; its C4 config drops the setting.
train_dataloader = dict(dataset=dict(ignore_keys=['dataset_type']))

max_iters = 24000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[18000, 22000], gamma=0.1),
]
# after the last iteration (interval = max_iters) and before CheckpointHook (priority VERY_LOW) saves
custom_hooks = [
    dict(type='mmpretrain.BatchSamplerPreciseBNHook', num_samples=200 * 16, interval=max_iters, priority='ABOVE_NORMAL')
]
val_evaluator = dict(iou_thrs=[0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
test_evaluator = val_evaluator
