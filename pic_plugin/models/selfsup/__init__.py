from .instance_classification import InstanceClassification

__all__ = ['InstanceClassification']
