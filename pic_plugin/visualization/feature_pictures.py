"""Pictures of what a network learned: a 2-D map of its kNN features and a nearest-neighbour retrieval grid.

Small functions from features and images to RGB ``uint8`` arrays, ready for mmengine's ``Visualizer.add_image``
(which hands them to every vis backend of the config: local PNGs, TensorBoard, W&B):

* :func:`embed_2d`: features -> 2-D points, by UMAP where umap-learn is installed, else scikit-learn's t-SNE;
* :func:`scatter_image`: 2-D points -> a scatter plot coloured by label (matplotlib's Agg canvas, no display);
* :func:`cosine_neighbours`: each query's most similar reference features (the weighted kNN's similarity);
* :func:`neighbour_matches`: whether each neighbour has its query's label;
* :func:`retrieval_grid`: query images and their neighbours in rows, each neighbour framed green (same label),
  red (another label) or grey (no labels);
* :func:`draw_feature_pictures`: both pictures of a ``KNNFeatures``, as ``FeaturePicturesHook`` and
  ``tools/visualize_features.py`` draw them.

Example:
    >>> points, method = embed_2d(features)                        # (N, 2), 'tsne' or 'umap'
    >>> image = scatter_image(points, labels, title=method)        # (800, 800, 3) uint8
    >>> Visualizer.get_current_instance().add_image(method, image, step=epoch)
"""
import importlib.util
from typing import Callable, Dict, Optional, Sequence, Tuple

import matplotlib
import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from torch import Tensor

from pic_plugin.evaluation.metrics.weighted_knn import nearest_neighbours
from .knn_features import KNNFeatures, evenly_spaced

EMBEDDING_METHODS = ('auto', 'tsne', 'umap')
DPI = 100
BACKGROUND = (255, 255, 255)
QUERY_COLOUR = (40, 100, 220)  # blue
RIGHT_COLOUR = (0, 170, 60)  # green: the neighbour has the query's label
WRONG_COLOUR = (220, 30, 30)  # red: another label
UNLABELLED_COLOUR = (150, 150, 150)  # grey: the data set has no labels


def check_embedding_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is one of ``EMBEDDING_METHODS``."""
    if method not in EMBEDDING_METHODS:
        raise ValueError(f'method={method!r} is not one of {EMBEDDING_METHODS}; use \'auto\' for UMAP where '
                         'umap-learn is installed and t-SNE otherwise.')


def embed_2d(features: Tensor, method: str = 'auto', seed: int = 0) -> Tuple[np.ndarray, str]:
    """Map L2-normalised features to 2-D points for a scatter plot.

    'auto' uses UMAP (cosine metric) where umap-learn is installed and t-SNE (scikit-learn, PCA initialisation,
    perplexity 30 or less for few points) otherwise.

    Args:
        features (Tensor): (N, D) features, N >= 2.
        method (str): 'auto', 'tsne' or 'umap'. Defaults to 'auto'.
        seed (int): Random state of the embedding. Defaults to 0.

    Returns:
        tuple[np.ndarray, str]: (N, 2) float points and the method used, 'tsne' or 'umap'.
    """
    check_embedding_method(method)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f'features must be (N, D) with N >= 2 to be embedded, got shape {tuple(features.shape)}.')
    has_umap = importlib.util.find_spec('umap') is not None
    if method == 'umap' and not has_umap:
        raise ValueError("method='umap' needs umap-learn: `pip install umap-learn`, or use method='tsne' or 'auto'.")
    unit = F.normalize(features.float(), dim=1).numpy()  # (N, D)
    if method == 'umap' or (method == 'auto' and has_umap):
        import umap  # optional dependency
        return umap.UMAP(n_components=2, metric='cosine', random_state=seed).fit_transform(unit), 'umap'
    perplexity = min(30.0, (unit.shape[0] - 1) / 3)  # t-SNE needs perplexity < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed)
    return tsne.fit_transform(unit), 'tsne'


def scatter_image(points: np.ndarray,
                  labels: Optional[Tensor] = None,
                  class_names: Optional[Sequence[str]] = None,
                  title: str = '',
                  size: Tuple[int, int] = (800, 800)) -> np.ndarray:
    """Draw 2-D points, one colour per label and a legend of up to 20 classes, as an RGB image.

    Args:
        points (np.ndarray): (N, 2) points, e.g. from :func:`embed_2d`.
        labels (Tensor, optional): (N,) integer labels; None draws every point in one colour. Defaults to None.
        class_names (Sequence[str], optional): Name of each label for the legend; None shows the label
            numbers. Defaults to None.
        title (str): Title above the plot. Defaults to ''.
        size (tuple[int, int]): (width, height) of the image in pixels. Defaults to (800, 800).

    Returns:
        np.ndarray: (height, width, 3) uint8 image.
    """
    width, height = size
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'points must be (N, 2), got shape {points.shape}; embed the features with embed_2d.')
    if labels is not None and labels.shape != points.shape[:1]:
        raise ValueError(f'labels must be ({points.shape[0]},), one per point, got {tuple(labels.shape)}.')
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots()
    marker_size = float(np.clip(20000 / len(points), 2, 30))
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=marker_size, color='tab:blue', linewidths=0)
    else:
        classes = sorted(set(labels.tolist()))
        colours = matplotlib.colormaps['tab10' if len(classes) <= 10 else 'tab20' if len(classes) <= 20 else 'turbo']
        for position, label in enumerate(classes):
            chosen = (labels == label).numpy()
            name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
            axes.scatter(points[chosen, 0], points[chosen, 1], s=marker_size, linewidths=0, label=name,
                         color=colours(position if len(classes) <= 20 else position / max(1, len(classes) - 1)))
        if len(classes) <= 20:
            axes.legend(loc='best', markerscale=max(1.0, 30 / marker_size) ** 0.5, fontsize='small', framealpha=0.8)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (height, width, 3)


def cosine_neighbours(queries: Tensor, references: Tensor, num_neighbours: int) -> Tuple[Tensor, Tensor]:
    """The ``num_neighbours`` references most similar to each query by cosine similarity, most similar first.

    The similarity and the tie rule are those of the weighted kNN evaluation: of references tied at the k-th
    similarity, those with the lower indices are kept.

    Args:
        queries (Tensor): (Q, D) query features.
        references (Tensor): (N, D) reference features.
        num_neighbours (int): k, in [1, N].

    Returns:
        tuple[Tensor, Tensor]: (Q, k) cosine similarities and (Q, k) long indices into ``references``.
    """
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError(f'queries (Q, D) and references (N, D) must share D, got {tuple(queries.shape)} and '
                         f'{tuple(references.shape)}; extract both with the same model and layer.')
    if not 1 <= num_neighbours <= references.shape[0]:
        raise ValueError(f'num_neighbours={num_neighbours} must lie in [1, {references.shape[0]}] (the number of '
                         'references); ask for fewer neighbours or keep more reference images.')
    query_unit = F.normalize(queries.float(), dim=1)  # (Q, D)
    reference_unit = F.normalize(references.float(), dim=1)  # (N, D)
    similarity = query_unit @ reference_unit.T  # (Q, D) x (D, N) -> (Q, N)
    return nearest_neighbours(similarity, num_neighbours)


def neighbour_matches(query_labels: Tensor, reference_labels: Tensor, neighbour_index: Tensor) -> Tensor:
    """Whether each neighbour's label is its query's.

    Args:
        query_labels (Tensor): (Q,) labels of the queries.
        reference_labels (Tensor): (N,) labels of the references.
        neighbour_index (Tensor): (Q, k) indices into the references, from :func:`cosine_neighbours`.

    Returns:
        Tensor: (Q, k) bool, True where the neighbour has the query's label.
    """
    return reference_labels[neighbour_index] == query_labels.view(-1, 1)  # (Q, k)


def retrieval_grid(query_images: Sequence[np.ndarray],
                   neighbour_images: Sequence[Sequence[np.ndarray]],
                   matches: Optional[Tensor] = None,
                   cell_size: int = 64,
                   border: int = 3,
                   padding: int = 4) -> np.ndarray:
    """Lay out one row per query: the query framed blue, a gap, then its neighbours framed by their match.

    Every image is scaled to fit a ``cell_size`` square (nearest-neighbour up, area down) and centred on a white
    cell inside a ``border``-pixel frame: green where the neighbour has the query's label, red where it has
    another, grey when ``matches`` is None. The image has ``Q * (tile + padding) + padding`` rows and
    ``(k + 1) * (tile + padding) + 3 * padding`` columns, with ``tile = cell_size + 2 * border``.

    Args:
        query_images (Sequence[np.ndarray]): Q images, each (H, W, 3) RGB or (H, W) grey, uint8.
        neighbour_images (Sequence[Sequence[np.ndarray]]): For each query, its k neighbours' images, most
            similar first.
        matches (Tensor, optional): (Q, k) bool from :func:`neighbour_matches`; None when there are no labels.
            Defaults to None.
        cell_size (int): Side of the square each image is fitted in, in pixels. Defaults to 64.
        border (int): Width of the coloured frames in pixels. Defaults to 3.
        padding (int): Space between tiles in pixels (the query's column is set off by two more). Defaults to 4.

    Returns:
        np.ndarray: The grid as an (H, W, 3) uint8 image.
    """
    num_queries = len(query_images)
    num_neighbours = len(neighbour_images[0]) if num_queries == len(neighbour_images) and num_queries else 0
    if num_neighbours == 0 or any(len(row) != num_neighbours for row in neighbour_images):
        raise ValueError(f'need one row of k >= 1 neighbour images per query image, got {num_queries} queries and '
                         f'rows of {[len(row) for row in neighbour_images]} neighbours.')
    if matches is not None and tuple(matches.shape) != (num_queries, num_neighbours):
        raise ValueError(f'matches must be ({num_queries}, {num_neighbours}), one per neighbour, got '
                         f'{tuple(matches.shape)}.')
    tile = cell_size + 2 * border
    step = tile + padding
    height = num_queries * step + padding
    width = (num_neighbours + 1) * step + 3 * padding
    grid = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for row in range(num_queries):
        top = padding + row * step
        _paste_framed(grid, query_images[row], top, padding, cell_size, border, QUERY_COLOUR)
        for column, image in enumerate(neighbour_images[row]):
            left = 3 * padding + (column + 1) * step
            if matches is None:
                colour = UNLABELLED_COLOUR
            else:
                colour = RIGHT_COLOUR if bool(matches[row, column]) else WRONG_COLOUR
            _paste_framed(grid, image, top, left, cell_size, border, colour)
    return grid


def _paste_framed(grid: np.ndarray, image: np.ndarray, top: int, left: int, cell_size: int, border: int,
                  colour: Tuple[int, int, int]) -> None:
    """Draw a ``border``-wide frame of ``colour`` at (top, left) and the image fitted and centred inside it."""
    tile = cell_size + 2 * border
    grid[top:top + tile, left:left + tile] = colour
    grid[top + border:top + border + cell_size, left + border:left + border + cell_size] = BACKGROUND
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    interpolation = 'nearest' if max(image.shape[:2]) <= cell_size else 'area'
    fitted = mmcv.imrescale(image, (cell_size, cell_size), interpolation=interpolation)[:cell_size, :cell_size]
    fitted_height, fitted_width = fitted.shape[:2]
    y = top + border + (cell_size - fitted_height) // 2
    x = left + border + (cell_size - fitted_width) // 2
    grid[y:y + fitted_height, x:x + fitted_width] = fitted


def draw_feature_pictures(features: KNNFeatures,
                          load_image: Callable[[int], np.ndarray],
                          num_queries: int = 8,
                          num_neighbours: int = 8,
                          method: str = 'auto',
                          class_names: Optional[Sequence[str]] = None,
                          map_size: Tuple[int, int] = (800, 800),
                          cell_size: int = 64,
                          title_suffix: str = '') -> Dict[str, np.ndarray]:
    """The 2-D map of all collected features and the retrieval grid of held-out queries among the references.

    The queries are ``num_queries`` test images evenly spaced over the collected ones; their neighbours are
    searched among the collected reference ("train") images, as the weighted kNN's are.

    Args:
        features (KNNFeatures): The collected features, e.g. from ``KNNFeatureCollector.gather()``.
        load_image (Callable[[int], np.ndarray]): Loads the RGB image of a ``KNNSplits`` index
            (``features.indices``), e.g. with ``display_image``.
        num_queries (int): Rows of the grid, at most the test images. Defaults to 8.
        num_neighbours (int): Neighbours per query, at most the reference images. Defaults to 8.
        method (str): Embedding of the map: 'auto', 'tsne' or 'umap' (:func:`embed_2d`). Defaults to 'auto'.
        class_names (Sequence[str], optional): Names of the labels for the legend. Defaults to None.
        map_size (tuple[int, int]): (width, height) of the map in pixels. Defaults to (800, 800).
        cell_size (int): Side of each image of the grid in pixels. Defaults to 64.
        title_suffix (str): Appended to the map's title, e.g. ``', epoch 20'``. Defaults to ''.

    Returns:
        dict[str, np.ndarray]: ``{'tsne' or 'umap': map, 'retrieval': grid}``, RGB uint8 images.
    """
    if num_queries < 1 or num_neighbours < 1:
        raise ValueError(f'num_queries={num_queries} and num_neighbours={num_neighbours} must be positive.')
    points, used = embed_2d(features.features, method)  # (N, 2)
    title = f'{"t-SNE" if used == "tsne" else "UMAP"} of {len(points):,} kNN features{title_suffix}'
    pictures = {used: scatter_image(points, features.labels, class_names, title, map_size)}

    test_rows = features.is_test.nonzero().flatten()  # (N_test,)
    reference_rows = (~features.is_test).nonzero().flatten()  # (N_ref,)
    if len(test_rows) == 0 or len(reference_rows) == 0:
        raise ValueError(f'the retrieval grid needs test and reference images, got {len(test_rows)} and '
                         f'{len(reference_rows)}; collect features of both KNNSplits splits.')
    query_rows = test_rows[torch.from_numpy(evenly_spaced(len(test_rows), num_queries))]  # (Q,)
    _, neighbours = cosine_neighbours(features.features[query_rows], features.features[reference_rows],
                                      min(num_neighbours, len(reference_rows)))  # (Q, k) into reference_rows
    neighbour_rows = reference_rows[neighbours]  # (Q, k) into the collected images
    matches = None
    if features.labels is not None:
        matches = neighbour_matches(features.labels[query_rows], features.labels[reference_rows], neighbours)
    query_images = [load_image(int(features.indices[row])) for row in query_rows]
    neighbour_images = [[load_image(int(features.indices[row])) for row in rows] for rows in neighbour_rows]
    pictures['retrieval'] = retrieval_grid(query_images, neighbour_images, matches, cell_size)
    return pictures
