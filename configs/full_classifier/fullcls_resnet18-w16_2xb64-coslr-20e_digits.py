# The full classifier on the CPU: 2 processes (gloo), rows sharded over them, contrastive prior, top-10 hard-class
# smoothing; `bash tools/dist_train.sh THIS_CONFIG 2`.
_base_ = ['../pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py']
model = dict(head=dict(negatives='full', sharded=True, label_smoothing=0.2, num_hard_classes=10))
train_dataloader = dict(batch_size=64)  # per process: 2 x 64 = 128, as the single-process PIC config
# DistributedDataParallel of a CPU model takes no device ids (mmengine's default passes the local rank)
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)
custom_hooks = _base_.custom_hooks + [dict(type='ContrastivePriorHook'), dict(type='HardClassHook', k=10)]
