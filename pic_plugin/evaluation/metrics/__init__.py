from .weighted_knn import WeightedKNN, top_classes, topk_accuracy, weighted_knn_classify

__all__ = ['WeightedKNN', 'weighted_knn_classify', 'top_classes', 'topk_accuracy']
