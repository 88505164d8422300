from .inaturalist import INaturalist2018
from .knn_splits import KNNSplits
from .samplers import KeyedDefaultSampler, SlidingWindowSampler
from .transforms import SeededByVisit
from .unlabelled_image_folder import UnlabelledImageFolder
from .visit_key import VisitKey

__all__ = ['INaturalist2018', 'KNNSplits', 'KeyedDefaultSampler', 'SeededByVisit', 'SlidingWindowSampler',
           'UnlabelledImageFolder', 'VisitKey']
