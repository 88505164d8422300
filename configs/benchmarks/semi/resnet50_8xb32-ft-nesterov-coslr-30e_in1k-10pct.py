# Semi-supervised ImageNet-1k with 10% of the labels (128,116 images, SimCLR's 10percent.txt): the 1% recipe,
# fine-tuned for 30 epochs (SimCLR Appendix B.5). PIC Table 7 reports top-5 accuracy.
#
#   grep -Fwf 10percent.txt data/imagenet/meta/train.txt > data/imagenet/meta/train_10percent.txt
_base_ = './resnet50_8xb32-ft-nesterov-coslr-60e_in1k-1pct.py'

train_dataloader = dict(dataset=dict(ann_file='meta/train_10percent.txt'))
train_cfg = dict(max_epochs=30, val_interval=5)
