# Full classifier Table 5: label smoothing on the k = 100 hardest classes with alpha = 0.3 (default 100 / 0.2).
_base_ = ['../fullcls_resnet50_64xb64-coslr-200e_in1k.py']
model = dict(head=dict(label_smoothing=0.3, num_hard_classes=100))
custom_hooks = [dict(type='InstanceCountCheckHook'), dict(type='NaNGuardHook'), dict(type='ShardedTableHook'),
                dict(type='ContrastivePriorHook'), dict(type='HardClassHook', k=100)]
