from .feature_pictures import (cosine_neighbours, draw_feature_pictures, embed_2d, neighbour_matches, retrieval_grid,
                               scatter_image)
from .knn_features import KNNFeatureCollector, KNNFeatures, display_image, swaps_channels

__all__ = [
    'KNNFeatureCollector', 'KNNFeatures', 'cosine_neighbours', 'display_image', 'draw_feature_pictures',
    'embed_2d', 'neighbour_matches', 'retrieval_grid', 'scatter_image', 'swaps_channels'
]
