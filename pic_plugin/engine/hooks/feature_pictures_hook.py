"""After every validation, draw the kNN features' 2-D map and a retrieval grid through the runner's visualizer."""
from typing import Dict, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from pic_plugin.visualization.feature_pictures import check_embedding_method, draw_feature_pictures
from pic_plugin.visualization.knn_features import KNNFeatureCollector, display_image, swaps_channels
from .utils import unwrapped_model


@HOOKS.register_module()
class FeaturePicturesHook(Hook):
    """Pictures of what the backbone learned, from the features of the weighted-kNN validation.

    During each validation loop over a ``KNNSplits`` data set it keeps the ``knn_feature`` that the model's
    ``val_step`` yields (the feature the ``WeightedKNN`` metric votes with: the pooled backbone feature or the
    normalised projection, as ``model.knn_feature`` says) for an evenly spaced subset of at most ``max_points``
    images. After the loop, rank 0 draws

    * ``tsne`` (or ``umap`` where umap-learn is installed): a 2-D map of the kept features, coloured by label;
    * ``retrieval``: ``num_queries`` held-out images, each followed by its ``num_neighbours`` nearest reference
      images by cosine similarity, framed green (same label) or red (another label);

    and hands them to ``runner.visualizer.add_image(name, image, step)``, so every backend of the config's
    ``vis_backends`` receives them: ``LocalVisBackend`` writes ``{work_dir}/{timestamp}/vis_data/vis_image/
    {name}_{step}.png``, TensorBoard and W&B log them as images. The step is the epoch (the iteration for
    iteration-based training, 0 outside training).

    The map costs a t-SNE of the kept points (seconds for 2,000 on 2 CPU cores), the grid a
    ``num_queries x max_points`` similarity; the features are gathered from all ranks once per validation.

    Example::

        default_hooks = dict(feature_pictures=dict(type='FeaturePicturesHook', enable=True))
        # or on the command line of a digits config:
        # --cfg-options default_hooks.feature_pictures.enable=True

    Args:
        enable (bool): Whether to draw; the configs carry the hook disabled, so it is switched on by one
            option. Defaults to False.
        max_points (int): Most images whose features are kept (map points and reference images). Defaults
            to 2000.
        num_queries (int): Held-out images (rows) of the retrieval grid. Defaults to 8.
        num_neighbours (int): Neighbours per query. Defaults to 8.
        method (str): 2-D embedding: 'auto' (UMAP where installed, else t-SNE), 'tsne' or 'umap'. Defaults
            to 'auto'.
        map_size (tuple[int, int]): (width, height) of the map in pixels. Defaults to (800, 800).
        cell_size (int): Side of each image of the grid in pixels. Defaults to 64.
    """

    priority = 'LOW'

    def __init__(self,
                 enable: bool = False,
                 max_points: int = 2000,
                 num_queries: int = 8,
                 num_neighbours: int = 8,
                 method: str = 'auto',
                 map_size: Tuple[int, int] = (800, 800),
                 cell_size: int = 64) -> None:
        check_embedding_method(method)
        if min(max_points - 1, num_queries, num_neighbours, cell_size, *map_size) < 1:
            raise ValueError(f'max_points={max_points} must be at least 2 and num_queries={num_queries}, '
                             f'num_neighbours={num_neighbours}, cell_size={cell_size}, map_size={map_size} '
                             'positive.')
        self.enable = enable
        self.max_points = max_points
        self.num_queries = num_queries
        self.num_neighbours = num_neighbours
        self.method = method
        self.map_size = tuple(map_size)
        self.cell_size = cell_size
        self._collector: Optional[KNNFeatureCollector] = None

    def before_val_epoch(self, runner) -> None:
        if self.enable:
            self._collector = KNNFeatureCollector(runner.val_dataloader.dataset, self.max_points)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.enable:
            self._collector.add(outputs)

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if not self.enable:
            return
        features = self._collector.gather()  # every rank takes part
        self._collector = None
        if not is_main_process():
            return
        dataset = runner.val_dataloader.dataset
        bgr_to_rgb = swaps_channels(unwrapped_model(runner).data_preprocessor)
        step = _visualizer_step(runner)
        pictures = draw_feature_pictures(
            features, lambda index: display_image(dataset, index, bgr_to_rgb), self.num_queries,
            self.num_neighbours, self.method, dataset.metainfo.get('classes'), self.map_size, self.cell_size,
            title_suffix=f', step {step}')
        for name, image in pictures.items():
            runner.visualizer.add_image(name, image, step=step)
        runner.logger.info(f'FeaturePicturesHook: drew {" and ".join(pictures)} of {len(features.indices):,} '
                           f'images at step {step} through the visualizer.')


def _visualizer_step(runner) -> int:
    """The epoch of an epoch-based run, the iteration of an iteration-based one, 0 outside training.

    ``runner.epoch`` would build the training loop (and its data loader) when the runner only validates, so
    the loop is looked at first, as mmengine's ``LoggerHook`` does.
    """
    train_loop = runner._train_loop
    if train_loop is None or isinstance(train_loop, dict):
        return 0
    return runner.epoch if isinstance(train_loop, EpochBasedTrainLoop) else runner.iter
