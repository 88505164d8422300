# Full classifier Table 2, "MLP head" only: Gaussian-initialised rows, one-hot targets (67.3% in the paper).
_base_ = ['../fullcls_resnet50_64xb64-coslr-200e_in1k.py']
model = dict(head=dict(label_smoothing=0.))
custom_hooks = [dict(type='InstanceCountCheckHook'), dict(type='NaNGuardHook'), dict(type='ShardedTableHook')]
