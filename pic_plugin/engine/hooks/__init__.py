from .batch_sampler_precise_bn_hook import BatchSamplerPreciseBNHook
from .contrastive_prior_hook import ContrastivePriorHook
from .eval_progress_hook import EvalProgressHook
from .feature_pictures_hook import FeaturePicturesHook
from .hard_class_hook import HardClassHook
from .instance_count_check_hook import InstanceCountCheckHook
from .nan_guard_hook import NaNGuardHook
from .sharded_table_hook import ShardedTableHook

__all__ = [
    'BatchSamplerPreciseBNHook', 'ContrastivePriorHook', 'EvalProgressHook', 'FeaturePicturesHook', 'HardClassHook',
    'InstanceCountCheckHook', 'NaNGuardHook', 'ShardedTableHook'
]
