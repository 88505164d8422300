import pytest
import torch

from pic_plugin.models.utils import row_table as row_table_module
from pic_plugin.models.utils import RowTable


def test_normal_init_matches_the_release_scale():
    table = RowTable(5000, 128, init_std=0.01)
    assert table.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.equal(table.momentum, torch.zeros(5000, 128))
    assert torch.equal(table.last_step, torch.zeros(5000, dtype=torch.long))


def test_unit_init_gives_unit_rows_without_optimiser_state():
    table = RowTable(100, 16, init='unit', with_optim_state=False)
    assert torch.allclose(table.weight.norm(dim=1), torch.ones(100), atol=1e-6)
    assert table.momentum is None and table.last_step is None


def test_gather_and_write_by_index():
    table = RowTable(10, 4)
    indices = torch.tensor([7, 2])
    table.write(indices, weight=torch.ones(2, 4), last_step=torch.tensor([5, 6]))
    assert torch.equal(table.gather(indices, torch.device('cpu')), torch.ones(2, 4))
    assert table.last_step.tolist() == [0, 0, 6, 0, 0, 0, 0, 5, 0, 0]


@pytest.mark.parametrize('bad', [-1, 10])
def test_out_of_range_index_names_the_index_and_the_fix(bad):
    table = RowTable(10, 4)
    with pytest.raises(ValueError, match=f'sample_idx {bad} is out of range.*num_classes'):
        table.to_local(torch.tensor([0, bad]))


def test_state_dict_round_trip_and_size_mismatch():
    table = RowTable(10, 4)
    table.write(torch.tensor([3]), momentum=torch.full((1, 4), 2.0), last_step=torch.tensor([9]))
    state = table.state_dict()
    assert set(state) == {'weight', 'momentum', 'last_step'}
    restored = RowTable(10, 4)
    restored.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(restored, name), getattr(table, name))
    with pytest.raises(RuntimeError, match='data set size or the number of ranks changed'):
        RowTable(11, 4).load_state_dict(state)


def test_sharding_splits_rows_evenly_including_uneven_counts(monkeypatch):
    shards = []
    for rank in range(4):
        monkeypatch.setattr(row_table_module, 'get_dist_info', lambda rank=rank: (rank, 4))
        shards.append(RowTable(10, 2, sharded=True))
    assert [t.num_local_rows for t in shards] == [3, 3, 2, 2]
    assert [t.row_offset for t in shards] == [0, 3, 6, 8]
    assert shards[2].to_local(torch.tensor([6, 7])).tolist() == [0, 1]
    with pytest.raises(ValueError, match='not all in this rank'):
        shards[2].to_local(torch.tensor([5]))


def test_host_placement_stays_on_the_host():
    table = RowTable(10, 4, placement='host')
    table.place_on(torch.device('meta'))
    assert table.weight.device.type == 'cpu'


def test_rows_for_update_without_an_optimiser_says_which_to_use():
    with pytest.raises(RuntimeError, match="type='LazyCorrectedSGD'"):
        RowTable(10, 4).rows_for_update(torch.tensor([1]), torch.device('cpu'))


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_rows=0, dim=4), 'num_rows=0'),
    (dict(num_rows=4, dim=4, placement='gpu'), "placement='gpu'"),
    (dict(num_rows=4, dim=4, init='zeros'), "init='zeros'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RowTable(**kwargs)
