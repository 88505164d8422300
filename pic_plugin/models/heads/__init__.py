from .instance_cls_head import InstanceClsHead

__all__ = ['InstanceClsHead']
