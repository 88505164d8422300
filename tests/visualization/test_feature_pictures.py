"""The picture functions against independent computations: brute-force cosine neighbours, frames, pixel sizes."""
import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pic_plugin.visualization import (KNNFeatures, cosine_neighbours, draw_feature_pictures, embed_2d,
                                      neighbour_matches, retrieval_grid, scatter_image)
from pic_plugin.visualization.feature_pictures import QUERY_COLOUR, RIGHT_COLOUR, UNLABELLED_COLOUR, WRONG_COLOUR


def brute_force_neighbours(queries: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest cosine similarities of each query, largest first, lower index on ties."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    references = references / np.linalg.norm(references, axis=1, keepdims=True)
    similarity = queries.astype(np.float64) @ references.astype(np.float64).T
    return np.argsort(-similarity, axis=1, kind='stable')[:, :k]


def test_cosine_neighbours_equal_brute_force_nearest_neighbours():
    generator = torch.Generator().manual_seed(0)
    queries, references = torch.randn(6, 12, generator=generator), torch.randn(50, 12, generator=generator)
    references[7] *= 5.0  # the scale of a feature does not matter, only its direction
    similarity, index = cosine_neighbours(queries, references, 8)
    np.testing.assert_array_equal(index.numpy(), brute_force_neighbours(queries.numpy(), references.numpy(), 8))
    expected = torch.nn.functional.cosine_similarity(queries[:, None], references[index], dim=2)
    torch.testing.assert_close(similarity, expected)
    assert (similarity[:, :-1] >= similarity[:, 1:]).all()


def test_of_references_tied_at_the_last_place_the_lower_index_is_kept():
    references = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    references[20] = references[10]
    _, index = cosine_neighbours(references[10:11], references, 1)
    assert index.tolist() == [[10]]


def test_too_many_neighbours_are_refused():
    with pytest.raises(ValueError, match=r'num_neighbours=9 must lie in \[1, 8\]'):
        cosine_neighbours(torch.randn(2, 3), torch.randn(8, 3), 9)


def test_neighbour_matches_compare_each_neighbour_label_with_its_query_label():
    reference_labels = torch.tensor([0, 1, 1, 2, 0])
    neighbour_index = torch.tensor([[0, 1, 4], [3, 2, 1]])
    matches = neighbour_matches(torch.tensor([0, 1]), reference_labels, neighbour_index)
    assert matches.tolist() == [[True, False, True], [False, True, True]]


def tile_origin(row: int, column: int, cell_size: int, border: int, padding: int):
    """Top-left pixel of a tile: column 0 is the query, 1.. the neighbours (set off by 2 * padding more)."""
    step = cell_size + 2 * border + padding
    return padding + row * step, padding + column * step + (2 * padding if column else 0)


def solid_image(colour: np.ndarray) -> np.ndarray:
    """A 10 x 10 RGB image of one colour."""
    return np.broadcast_to(colour, (10, 10, 3)).copy()


def test_retrieval_grid_size_frames_and_cells():
    cell_size, border, padding = 10, 2, 3
    colours = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5 + 10  # (Q, 1 + k, RGB), distinct
    queries = [solid_image(colours[row, 0]) for row in range(3)]
    neighbours = [[solid_image(colours[row, column]) for column in range(1, 5)] for row in range(3)]
    matches = torch.tensor([[True, False, True, True], [False, False, True, False], [True, True, True, False]])
    grid = retrieval_grid(queries, neighbours, matches, cell_size=cell_size, border=border, padding=padding)
    tile = cell_size + 2 * border
    assert grid.shape == (3 * (tile + padding) + padding, 5 * (tile + padding) + 3 * padding, 3)
    assert grid.dtype == np.uint8
    for row in range(3):
        for column in range(5):
            top, left = tile_origin(row, column, cell_size, border, padding)
            frame = QUERY_COLOUR if column == 0 else RIGHT_COLOUR if matches[row, column - 1] else WRONG_COLOUR
            assert tuple(grid[top, left]) == frame
            assert tuple(grid[top + tile - 1, left + tile - 1]) == frame
            assert (grid[top + border:top + border + cell_size, left + border:left + border + cell_size]
                    == colours[row, column]).all()
    unlabelled = retrieval_grid(queries, neighbours, None, cell_size=cell_size, border=border, padding=padding)
    top, left = tile_origin(1, 2, cell_size, border, padding)
    assert tuple(unlabelled[top, left]) == UNLABELLED_COLOUR


def test_retrieval_grid_fits_images_in_their_cells_keeping_the_aspect():
    wide_grey = np.full((8, 16), 40, dtype=np.uint8)  # (H, W): scaled 2x to 16 x 32 in a 32-pixel cell
    grid = retrieval_grid([wide_grey], [[wide_grey]], None, cell_size=32, border=1, padding=2)
    top, left = tile_origin(0, 0, 32, 1, 2)
    cell = grid[top + 1:top + 33, left + 1:left + 33]
    assert (cell[8:24] == 40).all()  # the image, centred
    assert (cell[:8] == 255).all() and (cell[24:] == 255).all()  # white above and below


def test_retrieval_grid_refuses_rows_of_different_lengths():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match='one row of k >= 1 neighbour images per query'):
        retrieval_grid([image, image], [[image, image], [image]])


@pytest.mark.parametrize('labelled', [True, False])
def test_scatter_image_has_the_requested_pixel_size(labelled):
    points = np.random.default_rng(0).normal(size=(60, 2))
    labels = torch.arange(60) % 3 if labelled else None
    image = scatter_image(points, labels, ['zero', 'one', 'two'] if labelled else None, 'map', size=(320, 240))
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert (image != 255).any(axis=2).sum() > 100  # points drawn on the white canvas


def pretend_umap_is(installed, monkeypatch) -> None:
    """Make ``importlib.util.find_spec('umap')`` find umap-learn (or not), whatever is installed."""
    real_find_spec = importlib.util.find_spec
    found = object() if installed else None
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *args: found if name == 'umap' else real_find_spec(name, *args))


def test_embed_2d_uses_tsne_without_umap_and_refuses_umap(monkeypatch):
    pretend_umap_is(False, monkeypatch)
    features = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    points, method = embed_2d(features)
    assert method == 'tsne' and points.shape == (40, 2) and np.isfinite(points).all()
    with pytest.raises(ValueError, match=r"method='umap' needs umap-learn: `pip install umap-learn`"):
        embed_2d(features, method='umap')
    with pytest.raises(ValueError, match=r"method='pca' is not one of"):
        embed_2d(features, method='pca')


def test_embed_2d_prefers_umap_where_it_is_installed(monkeypatch):
    calls = []

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, unit):
            np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)  # L2-normalised features
            return unit[:, :2]

    monkeypatch.setitem(sys.modules, 'umap', SimpleNamespace(UMAP=FakeUMAP))
    pretend_umap_is(True, monkeypatch)
    points, method = embed_2d(torch.randn(10, 4) * 3)
    assert method == 'umap' and points.shape == (10, 2)
    assert calls == [dict(n_components=2, metric='cosine', random_state=0)]


def encoded_image(index: int) -> np.ndarray:
    """An 8 x 8 image whose red channel is its data set index, so that a grid cell tells which image it shows."""
    return np.broadcast_to(np.array([index, 255 - index, 7], dtype=np.uint8), (8, 8, 3)).copy()


def test_the_grid_shows_each_query_and_its_brute_force_neighbours_with_their_marks():
    generator = torch.Generator().manual_seed(3)
    num_reference, num_test, cell_size = 40, 10, 8
    labels = torch.randint(0, 3, (num_reference + num_test,), generator=generator)
    features = KNNFeatures(features=torch.randn(num_reference + num_test, 8, generator=generator), labels=labels,
                           is_test=torch.arange(50) >= num_reference, indices=torch.arange(50) + 100)
    loaded = []
    pictures = draw_feature_pictures(features, lambda index: loaded.append(index) or encoded_image(index),
                                     num_queries=4, num_neighbours=5, map_size=(200, 150), cell_size=cell_size)
    assert set(pictures) == {'tsne', 'retrieval'}
    assert pictures['tsne'].shape == (150, 200, 3)

    query_rows = np.array([40, 43, 46, 49])  # 4 of the 10 test images, evenly spaced
    expected = brute_force_neighbours(features.features[query_rows].numpy(), features.features[:40].numpy(), 5)
    grid = pictures['retrieval']
    for row, query in enumerate(query_rows):
        top, left = tile_origin(row, 0, cell_size, 3, 4)
        assert grid[top + 3 + cell_size // 2, left + 3 + cell_size // 2, 0] == query + 100
        for column, reference in enumerate(expected[row]):
            top, left = tile_origin(row, column + 1, cell_size, 3, 4)
            assert grid[top + 3 + cell_size // 2, left + 3 + cell_size // 2, 0] == reference + 100
            right = int(labels[reference]) == int(labels[query])
            assert tuple(grid[top, left]) == (RIGHT_COLOUR if right else WRONG_COLOUR)
    assert len(loaded) == 4 * (1 + 5)
