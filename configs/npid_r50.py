# NPID (Wu et al. 2018), ResNet-50, ImageNet-1k, 8 GPUs x 32 = 256, 200 epochs: the experiment of NPID Sec. 4.2
# (Table 2: 42.5% kNN top-1). The same experiment under mmpretrain's naming is
# configs/npid/npid_resnet50_8xb32-steplr-200e_in1k.py.
_base_ = [
    '_base_/models/npid_r50.py',
    '_base_/datasets/imagenet_bs32_npid.py',
    '_base_/schedules/npid_sgd_steplr_200e.py',
    '_base_/default_runtime.py',
]
