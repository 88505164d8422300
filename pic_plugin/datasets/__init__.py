from .inaturalist import INaturalist2018
from .knn_splits import KNNSplits
from .samplers import SlidingWindowSampler
from .unlabelled_image_folder import UnlabelledImageFolder

__all__ = ['INaturalist2018', 'KNNSplits', 'SlidingWindowSampler', 'UnlabelledImageFolder']
