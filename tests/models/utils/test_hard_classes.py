import math

import pytest
import torch
import torch.nn.functional as F

from distributed import run_distributed
from float_bounds import cosine_logit_error
from pic_plugin.models.utils import top_k_similar_rows
from pic_plugin.models.utils.hard_classes import GROUP_SIZE


def similarity_matrix(rows: torch.Tensor, exclude_self: bool) -> torch.Tensor:
    unit = F.normalize(rows.double(), dim=1)
    similarities = unit @ unit.t()  # (N, N)
    if exclude_self:
        similarities.fill_diagonal_(-math.inf)
    return similarities


def assert_top_k(found, rows: torch.Tensor, k: int, exclude_self: bool = True, first_row: int = 0) -> None:
    """``found`` holds a top-k of rows ``first_row...`` over all ``rows``: brute force, ties in any order."""
    similarities = similarity_matrix(rows, exclude_self)[first_row:first_row + found.values.shape[0]]
    expected = similarities.topk(k, dim=1).values  # (n, k), descending
    assert found.values.shape == found.indices.shape == expected.shape
    error = cosine_logit_error(rows.shape[1], 1.0)  # of one float32 cosine similarity
    # the i-th largest of values that each err by at most `error` errs by at most `error` (ties in any order)
    assert torch.allclose(found.values.double(), expected, rtol=0, atol=error)
    assert (found.indices >= 0).all() and (found.indices < rows.shape[0]).all()
    # every index holds the similarity returned with it, and no row is named twice
    assert torch.allclose(similarities.gather(1, found.indices), found.values.double(), rtol=0, atol=error)
    assert all(len(set(row.tolist())) == k for row in found.indices)
    if exclude_self:
        own = torch.arange(first_row, first_row + found.indices.shape[0])[:, None]
        assert not (found.indices == own).any()


@pytest.mark.parametrize('num_rows, dim, k, chunk_size, key_block_size', [
    (50, 8, 5, 7, 9),  # uneven chunks, blocks narrower than k groups, padding columns
    (300, 16, 100, 64, 100),
    (40, 4, 39, 3, 5),  # k = N - 1: every other row
    (3000, 16, 20, 512, 1024),  # group screening, several blocks and merges per chunk
    (200, 8, 10, 1000, 10000),  # one chunk and one block larger than the table
])
def test_matches_brute_force(num_rows, dim, k, chunk_size, key_block_size):
    rows = torch.randn(num_rows, dim, generator=torch.Generator().manual_seed(num_rows))
    found = top_k_similar_rows(rows, k, chunk_size=chunk_size, key_block_size=key_block_size)
    assert_top_k(found, rows, k)
    assert (found.values[:, :-1] >= found.values[:, 1:]).all()  # most similar first


def test_exclude_self_false_puts_each_row_first_and_allows_k_equal_n():
    rows = torch.randn(30, 6, generator=torch.Generator().manual_seed(0))
    found = top_k_similar_rows(rows, 30, chunk_size=4, key_block_size=8, exclude_self=False)
    assert_top_k(found, rows, 30, exclude_self=False)
    assert torch.equal(found.indices[:, 0], torch.arange(30))
    assert torch.allclose(found.values[:, 0], torch.ones(30))


def test_ties_give_the_exact_top_values_and_matching_indices():
    # 300 rows drawn from 6 directions (each scaled): every similarity is one of a few values, repeated
    directions = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    choice = torch.randint(0, 6, (300, ), generator=torch.Generator().manual_seed(2))
    rows = directions[choice] * torch.rand(300, 1, generator=torch.Generator().manual_seed(3)).add(0.5)
    for k in (1, 40, 120):
        assert_top_k(top_k_similar_rows(rows, k, chunk_size=33, key_block_size=48), rows, k)


def test_identical_rows_are_all_equally_similar():
    rows = torch.ones(70, 4)
    found = top_k_similar_rows(rows, 69, chunk_size=16, key_block_size=GROUP_SIZE * 3)
    assert_top_k(found, rows, 69)


def test_row_offset_shifts_the_returned_indices():
    rows = torch.randn(20, 5, generator=torch.Generator().manual_seed(4))
    plain = top_k_similar_rows(rows, 3)
    shifted = top_k_similar_rows(rows, 3, row_offset=1000)
    assert torch.equal(shifted.indices, plain.indices + 1000)
    assert torch.equal(shifted.values, plain.values)


@pytest.mark.parametrize('k, exclude_self', [(20, True), (0, True), (21, False)])
def test_k_out_of_range_names_the_range(k, exclude_self):
    with pytest.raises(ValueError, match=rf'k={k} .* use a k in \[1, {20 - exclude_self}\]'):
        top_k_similar_rows(torch.randn(20, 4), k, exclude_self=exclude_self)


def test_non_positive_block_size_is_refused():
    with pytest.raises(ValueError, match='chunk_size=0 .* must be positive'):
        top_k_similar_rows(torch.randn(20, 4), 3, chunk_size=0)


def shard_rank(rank: int, world_size: int, shard_sizes, k: int):
    """Each rank searches its own uneven shard of one seeded table over all shards."""
    rows = torch.randn(sum(shard_sizes), 6, generator=torch.Generator().manual_seed(7))
    offset = sum(shard_sizes[:rank])
    found = top_k_similar_rows(rows[offset:offset + shard_sizes[rank]], k, chunk_size=3, key_block_size=5,
                               row_offset=offset, sharded=True)
    return found.values, found.indices


@pytest.mark.parametrize('shard_sizes, k', [
    ((13, 10), 4),
    ((7, 0, 9, 7), 22),  # an empty shard, and k = N - 1 larger than any shard
])
def test_sharded_search_equals_the_single_process_one(shard_sizes, k):
    results = run_distributed(shard_rank, len(shard_sizes), shard_sizes, k)
    rows = torch.randn(sum(shard_sizes), 6, generator=torch.Generator().manual_seed(7))
    single = top_k_similar_rows(rows, k)
    values = torch.cat([values for values, _ in results])
    indices = torch.cat([indices for _, indices in results])
    # two float32 searches over other chunks: each similarity errs by at most one cosine error either way
    assert torch.allclose(values, single.values, rtol=0, atol=2 * cosine_logit_error(6, 1.0))
    assert_top_k(type(single)(values, indices), rows, k)
