import re

import pytest
import torch

from distributed import run_distributed
from progress_output import captured_progress

from pic_plugin.models.utils import row_table as row_table_module
from pic_plugin.models.utils import RowTable, shard_sizes


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
    with pytest.raises(RuntimeError, match='the data set size changed since the checkpoint was saved'):
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


def sharded_checkpoint_rank(rank, world_size):
    """Each rank fills its shard with its global row numbers, then saves as mmengine does and reloads; its output."""
    table = RowTable(10, 2, sharded=True)
    rows = torch.arange(table.row_offset, table.row_offset + table.num_local_rows, dtype=torch.float32)
    table.weight.copy_(rows[:, None].expand(-1, 2))
    table.last_step.fill_(rank + 1)
    with captured_progress() as text:
        table.gather_shards_for_checkpoint()  # ShardedTableHook does this on every rank before a save
    saved = [table.state_dict() if rank == 0 else None]  # mmengine writes the checkpoint from rank 0 only
    torch.distributed.broadcast_object_list(saved, src=0)  # on resume every rank reads that file
    restored = RowTable(10, 2, sharded=True)
    restored.load_state_dict(saved[0])
    return (saved[0], torch.equal(restored.weight, table.weight), torch.equal(restored.last_step, table.last_step),
            text.getvalue())


@pytest.mark.parametrize('world_size', [2, 3])
def test_a_sharded_table_saves_every_shard_from_rank_0_and_reloads_its_own(world_size):
    results = run_distributed(sharded_checkpoint_rank, world_size)
    whole = results[0][0]
    assert torch.equal(whole['weight'][:, 0], torch.arange(10, dtype=torch.float32))
    shard_sizes = [10 // world_size + (r < 10 % world_size) for r in range(world_size)]
    expected_steps = torch.cat([torch.full((size, ), r + 1) for r, size in enumerate(shard_sizes)])
    assert torch.equal(whole['last_step'], expected_steps)
    assert all(weight_ok and steps_ok for _, weight_ok, steps_ok, _ in results)
    # rank 0 shows the gather of the whole table's weight, momentum and last_step, 1 KiB each (rounded up)
    shown = results[0][3]
    assert re.search(r'\] 3/3, .*\n', shown) and 'sharded table gather for the checkpoint: 3 KiB in' in shown
    assert all('gather' not in output and '/3' not in output for _, _, _, output in results[1:])
    exported = RowTable(10, 2)  # one process reads the whole table back (export)
    exported.load_state_dict(whole)
    assert torch.equal(exported.weight, whole['weight'])


def load_on_ranks(rank, world_size, whole):
    """Load a whole table saved by another number of ranks; return this rank's shard."""
    table = RowTable(10, 2, sharded=True)
    table.load_state_dict(whole)
    return table.row_offset, table.weight.clone(), table.last_step.clone()


def save_one_shard(rank, world_size):
    """What rank 0 would save without ShardedTableHook: its own rows only."""
    return RowTable(10, 2, sharded=True).state_dict()


@pytest.mark.parametrize('new_world_size', [1, 3])
def test_a_run_saved_on_two_ranks_resumes_on_another_number_of_ranks(new_world_size):
    whole = run_distributed(sharded_checkpoint_rank, 2)[0][0]
    shards = run_distributed(load_on_ranks, new_world_size, whole)
    for offset, weight, last_step in shards:
        rows = slice(offset, offset + weight.shape[0])
        assert torch.equal(weight, whole['weight'][rows]) and torch.equal(last_step, whole['last_step'][rows])
    assert sum(weight.shape[0] for _, weight, _ in shards) == 10


def test_a_checkpoint_of_one_shard_is_refused_with_the_fix():
    shard = run_distributed(save_one_shard, 2)[0]
    assert shard['weight'].shape == (5, 2)
    with pytest.raises(RuntimeError, match=r'holds \(5, 2\) rows but this table has 10 rows.*ShardedTableHook'):
        RowTable(10, 2).load_state_dict(shard)


def test_a_table_larger_than_the_host_memory_says_how_much_it_needs(monkeypatch):
    monkeypatch.setattr(row_table_module, 'available_host_memory', lambda: 2**30)
    with pytest.raises(MemoryError, match=r'1,281,167 rows x 128 .* needs 1\.2 GiB .* only 1\.0 GiB .*sharded=True'):
        RowTable(1281167, 128)
    RowTable(1000, 128)  # small tables still fit


def initial_shards(rank, world_size):
    """This rank's initial rows of a sharded table, for each init, after the seed the runner gives every rank."""
    shards = {}
    for init in INITS:
        torch.manual_seed(0)
        table = RowTable(NUM_INIT_ROWS, 3, init=init, sharded=True)
        shards[init] = (table.row_offset, table.weight)
    return shards


INITS = ('normal', 'unit')
NUM_INIT_ROWS = 10000  # shards end inside the 4,096-row blocks of one seed


@pytest.mark.parametrize('world_size', [2, 3])
def test_the_initial_rows_are_one_draw_whatever_the_number_of_ranks(world_size):
    ranks = run_distributed(initial_shards, world_size)
    for init in INITS:
        torch.manual_seed(0)
        whole = RowTable(NUM_INIT_ROWS, 3, init=init).weight
        assert torch.equal(torch.cat([shards[init][1] for shards in ranks]), whole), init
        offsets = [shards[init][0] for shards in ranks]
        assert offsets == [sum(shard_sizes(NUM_INIT_ROWS, world_size)[:r]) for r in range(world_size)]
        assert torch.unique(whole, dim=0).shape[0] == NUM_INIT_ROWS  # no two instances share an initial row
    assert whole.norm(dim=1).sub(1).abs().max() < 1e-6  # 'unit' rows: one normalised draw
