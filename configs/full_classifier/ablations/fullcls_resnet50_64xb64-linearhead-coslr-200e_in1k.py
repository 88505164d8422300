# Full classifier Table 2, without the MLP head: one linear projection 2048 -> 128 (58.6%).
_base_ = ['../fullcls_resnet50_64xb64-coslr-200e_in1k.py']
model = dict(neck=dict(_delete_=True, type='LinearNeck', in_channels=2048, out_channels=128, gap_dim=2, norm_cfg=None))
