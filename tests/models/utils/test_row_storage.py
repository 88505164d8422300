"""RowStorage: placement, sharding, the initial draw, gather / write, checkpoints (save this rank's, load a slice)."""
import pytest
import torch

from distributed import run_distributed
from pic_plugin.models.utils import LazySGDRows, RowStorage, first_occurrences
from pic_plugin.models.utils import gather as gather_module
from pic_plugin.models.utils import gather_rows_to_rank0
from pic_plugin.models.utils import row_storage as row_storage_module
from pic_plugin.models.utils import shard_sizes

CPU = torch.device('cpu')


def test_normal_init_matches_the_release_scale():
    storage = RowStorage(5000, 128, init_std=0.01)
    assert storage.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert list(storage.columns()) == ['weight']  # storage only: no SGD state
    assert storage.weight.dtype == torch.float32 and not storage.weight.requires_grad


def test_unit_init_gives_unit_rows():
    storage = RowStorage(100, 16, init='unit')
    assert torch.allclose(storage.weight.norm(dim=1), torch.ones(100), atol=1e-6)


def test_extra_columns_are_zero_in_their_own_shape_and_dtype_after_the_weight():
    storage = RowStorage(10, 4, dtype=torch.float64,
                         columns=dict(count=((), torch.int64), pair=((2, 3), torch.float32)))
    columns = storage.columns()
    assert list(columns) == ['weight', 'count', 'pair']
    expected = [((10, 4), torch.float64), ((10, ), torch.int64), ((10, 2, 3), torch.float32)]
    assert [(tuple(t.shape), t.dtype) for t in columns.values()] == expected
    assert not columns['count'].any() and not columns['pair'].any()
    assert set(storage.state_dict()) == {'weight', 'count', 'pair'}


def test_gather_write_and_assign_by_index():
    storage = RowStorage(10, 4, columns=dict(count=((), torch.int64)))
    indices = torch.tensor([7, 2])
    storage.write(indices, weight=torch.ones(2, 4, dtype=torch.float64), count=torch.tensor([5, 6]))
    gathered = storage.gather(indices, CPU)
    assert gathered.dtype == torch.float32 and torch.equal(gathered, torch.ones(2, 4))  # written in the rows' dtype
    assert storage.count.tolist() == [0, 0, 6, 0, 0, 0, 0, 5, 0, 0]
    assert storage.gather(torch.tensor([2, 7, 2]), CPU, 'count').tolist() == [6, 5, 6]
    gathered += 1  # a copy: the storage is untouched
    assert torch.equal(storage.weight[[7, 2]], torch.ones(2, 4))
    before = storage.weight.clone()
    storage.assign(torch.tensor([0]), torch.full((1, 4), 3.))  # a plain write for storage without an update rule
    assert torch.equal(storage.weight[0], torch.full((4, ), 3.)) and torch.equal(storage.weight[1:], before[1:])


def test_first_occurrences_pick_the_first_of_duplicates():
    unique, first = first_occurrences(torch.tensor([4, 9, 4, 0, 9, 29]))
    assert unique.tolist() == [0, 4, 9, 29] and first.tolist() == [3, 0, 1, 5]


@pytest.mark.parametrize('bad', [-1, 10])
def test_out_of_range_index_names_the_index_and_the_fix(bad):
    storage = RowStorage(10, 4)
    with pytest.raises(ValueError, match=f'sample_idx {bad} is out of range.*num_classes'):
        storage.to_local(torch.tensor([0, bad]))
    with pytest.raises(ValueError, match=f'sample_idx {bad} is out of range'):
        storage.check_range(torch.tensor([bad]))
    storage.check_range(torch.tensor([], dtype=torch.long))  # an empty batch is in range


def test_state_dict_round_trip_and_size_mismatch():
    storage = RowStorage(10, 4, columns=dict(count=((), torch.int64)))
    storage.write(torch.tensor([3]), weight=torch.full((1, 4), 2.0), count=torch.tensor([9]))
    state = storage.state_dict()
    assert set(state) == {'weight', 'count'}
    restored = RowStorage(10, 4, columns=dict(count=((), torch.int64)))
    restored.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(restored, name), getattr(storage, name))
    with pytest.raises(RuntimeError, match='the data set size changed since the checkpoint was saved'):
        RowStorage(11, 4).load_state_dict({'weight': state['weight']})
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"count"'):
        RowStorage(10, 4, columns=dict(count=((), torch.int64))).load_state_dict({'weight': state['weight']})


def test_sharding_splits_rows_evenly_including_uneven_counts(monkeypatch):
    shards = []
    for rank in range(4):
        monkeypatch.setattr(row_storage_module, 'get_dist_info', lambda rank=rank: (rank, 4))
        shards.append(RowStorage(10, 2, sharded=True))
    assert [s.num_local_rows for s in shards] == shard_sizes(10, 4) == [3, 3, 2, 2]
    assert [s.row_offset for s in shards] == [0, 3, 6, 8]
    assert all(s.world_size == 4 for s in shards)
    assert shards[2].to_local(torch.tensor([6, 7])).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r'not all in this rank\'s shard \[6, 8\)'):
        shards[2].to_local(torch.tensor([5]))
    replicated = RowStorage(10, 2)  # not sharded: every rank holds all rows
    assert (replicated.world_size, replicated.row_offset, replicated.num_local_rows) == (1, 0, 10)


def test_host_placement_stays_on_the_host_and_device_placement_moves_every_column():
    host = RowStorage(10, 4, placement='host')
    host.place_on(torch.device('meta'))
    assert host.weight.device.type == 'cpu'
    device = RowStorage(10, 4, columns=dict(count=((), torch.int64)))
    device.place_on(torch.device('meta'))
    assert {t.device.type for t in device.columns().values()} == {'meta'}


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_rows=0, dim=4), 'num_rows=0'),
    (dict(num_rows=2.5, dim=4), 'num_rows=2.5'),
    (dict(num_rows=4, dim=4, placement='gpu'), "placement='gpu'"),
    (dict(num_rows=4, dim=4, init='zeros'), "init='zeros'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RowStorage(**kwargs)


def test_a_table_larger_than_the_host_memory_says_how_much_it_needs(monkeypatch):
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: 2**29)
    with pytest.raises(MemoryError, match=r'1,281,167 rows x 128 \(columns weight\) needs 0\.6 GiB on this node '
                       r'\(1 rank\(s\) of 0\.6 GiB\) but only 0\.5 GiB .*sharded=True'):
        RowStorage(1281167, 128)
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: 2**30)
    # with the SGD state every row needs 2 x 128 x 4 + 8 bytes
    with pytest.raises(MemoryError, match=r'\(columns weight, momentum, last_step\) needs 1\.2 GiB .* only 1\.0 GiB'):
        LazySGDRows(1281167, 128)
    RowStorage(1281167, 128)  # the weight alone fits
    RowStorage(1000, 128)


def test_the_host_memory_check_counts_every_rank_of_the_node_and_pinned_rounding(monkeypatch):
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: 2**30)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')  # two ranks each allocate the 0.6 GiB replicated table
    with pytest.raises(MemoryError, match=r'needs 1\.2 GiB on this node \(2 rank\(s\) of 0\.6 GiB\)'):
        RowStorage(1281167, 128, placement='host')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: int(0.9 * 2**30))
    monkeypatch.setattr(row_storage_module.torch.cuda, 'is_available', lambda: True)  # pinned, were CUDA here
    with pytest.raises(MemoryError, match=r'pinned\) needs 1\.0 GiB'):  # 0.6 GiB rounded up to 1 GiB
        RowStorage(1281167, 128, placement='host')


@pytest.mark.parametrize('variable, value', [('OMPI_COMM_WORLD_LOCAL_SIZE', '2'),
                                             ('SLURM_STEP_TASKS_PER_NODE', '2(x3),1')])
def test_under_mpi_and_slurm_the_host_memory_check_counts_the_ranks_their_launcher_puts_on_the_node(
        monkeypatch, variable, value):
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: 2**30)
    monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)
    monkeypatch.setenv(variable, value)
    RowStorage(1281167, 128, placement='host')  # one process: the variable describes another job step
    monkeypatch.setattr(row_storage_module, 'get_dist_info', lambda: (0, 7))
    with pytest.raises(MemoryError, match=r'needs 1\.2 GiB on this node \(2 rank\(s\) of 0\.6 GiB\)'):
        RowStorage(1281167, 128, placement='host')


def test_only_the_pinned_columns_are_counted_in_powers_of_two(monkeypatch):
    """3 rows: a float32 weight of 12 bytes, pinned in 16, and an int64 host column of 24 bytes, not pinned."""
    monkeypatch.setattr(row_storage_module.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(row_storage_module.torch, 'zeros',
                        lambda *args, pin_memory=False, **kwargs: torch.empty(*args, **kwargs))  # no CUDA to pin
    table = dict(num_rows=3, dim=1, placement='host', columns=dict(step=((), torch.int64)), host_columns=('step', ))
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: 16 + 24)
    RowStorage(**table)
    monkeypatch.setattr(row_storage_module, 'available_host_memory', lambda: 16 + 24 - 1)
    with pytest.raises(MemoryError, match='pinned'):
        RowStorage(**table)


# ---- several processes (gloo on the CPU) --------------------------------------------------------------------
def sharded_checkpoint_rank(rank, world_size):
    """Each rank fills its shard with its global row numbers; rank 0 assembles every column as ShardedTableHook
    does, saves it as mmengine does, and every rank reloads its own shard from that file."""
    gather_module.CHUNK_BYTES = 16  # 2 rows of 2 float32 (1 int64 pair) per message: several chunks per shard
    storage = RowStorage(10, 2, sharded=True, columns=dict(count=((), torch.int64)))
    rows = torch.arange(storage.row_offset, storage.row_offset + storage.num_local_rows, dtype=torch.float32)
    storage.weight.copy_(rows[:, None].expand(-1, 2))
    storage.count.fill_(rank + 1)
    assert storage.state_dict() == {}  # no rank holds a sharded table whole: ShardedTableHook saves it
    own = storage.columns()
    chunks = []
    whole = {name: gather_rows_to_rank0(tensor, shard_sizes(10, world_size), chunks.append)
             for name, tensor in own.items()}
    saved = [whole if rank == 0 else None]  # mmengine writes the checkpoint from rank 0 only
    torch.distributed.broadcast_object_list(saved, src=0)  # on resume every rank reads that file
    restored = RowStorage(10, 2, sharded=True, columns=dict(count=((), torch.int64)))
    restored.load_state_dict(saved[0])
    return (saved[0], {name: tuple(tensor.shape) for name, tensor in own.items()}, whole, chunks,
            torch.equal(restored.weight, storage.weight) and torch.equal(restored.count, storage.count))


@pytest.mark.parametrize('world_size', [2, 3])
def test_a_sharded_table_is_assembled_on_rank_0_and_every_rank_reloads_its_own_shard_of_the_whole(world_size):
    results = run_distributed(sharded_checkpoint_rank, world_size)
    sizes = shard_sizes(10, world_size)
    # every rank gathered its own rows
    assert [own for _, own, _, _, _ in results] == [{'weight': (size, 2), 'count': (size, )} for size in sizes]
    whole = results[0][0]
    assert torch.equal(whole['weight'][:, 0], torch.arange(10, dtype=torch.float32))
    assert torch.equal(whole['count'], torch.cat([torch.full((size, ), r + 1) for r, size in enumerate(sizes)]))
    # only rank 0 assembles the table and sees chunks arrive
    assert all(set(gathered.values()) == {None} and chunks == [] for _, _, gathered, chunks, _ in results[1:])
    # rank 0 counted every row of both columns, received in messages of at most 2 rows
    chunks = results[0][3]
    assert sum(chunks) == 2 * 10 and max(chunks) == 2
    assert all(reloaded for _, _, _, _, reloaded in results)
    exported = RowStorage(10, 2, columns=dict(count=((), torch.int64)))  # one process reads the whole table back
    exported.load_state_dict(whole)
    assert torch.equal(exported.weight, whole['weight'])


def load_on_ranks(rank, world_size, whole):
    """Load a whole table saved by another number of ranks; return this rank's shard."""
    storage = RowStorage(10, 2, sharded=True, columns=dict(count=((), torch.int64)))
    storage.load_state_dict(whole)
    return storage.row_offset, storage.weight.clone(), storage.count.clone()


def sharded_state_dict(rank, world_size):
    """What rank 0 saves of a sharded table without ShardedTableHook."""
    return RowStorage(10, 2, sharded=True).state_dict()


@pytest.mark.parametrize('new_world_size', [1, 3])
def test_a_run_saved_on_two_ranks_resumes_on_another_number_of_ranks(new_world_size):
    whole = run_distributed(sharded_checkpoint_rank, 2)[0][0]
    shards = run_distributed(load_on_ranks, new_world_size, whole)
    for offset, weight, count in shards:
        rows = slice(offset, offset + weight.shape[0])
        assert torch.equal(weight, whole['weight'][rows]) and torch.equal(count, whole['count'][rows])
    assert [weight.shape[0] for _, weight, _ in shards] == shard_sizes(10, new_world_size)


def test_a_sharded_table_is_not_in_the_state_dict_and_a_checkpoint_of_one_shard_is_refused_with_the_fix():
    assert run_distributed(sharded_state_dict, 2) == [{}, {}]  # mmengine's broadcast of it would break the shards
    shard = {'weight': torch.zeros(5, 2)}  # e.g. one rank's rows, saved by hand
    with pytest.raises(RuntimeError, match=r'holds \(5, 2\) rows but this table has 10 rows.*ShardedTableHook'):
        RowStorage(10, 2).load_state_dict(shard)


INITS = ('normal', 'unit')
NUM_INIT_ROWS = 10000  # shards end inside the 4,096-row blocks of one seed


def initial_shards(rank, world_size):
    """This rank's initial rows of a sharded table, for each init, after the seed the runner gives every rank."""
    shards = {}
    for init in INITS:
        torch.manual_seed(0)
        storage = RowStorage(NUM_INIT_ROWS, 3, init=init, sharded=True)
        shards[init] = (storage.row_offset, storage.weight)
    return shards


@pytest.mark.parametrize('world_size', [1, 2, 3])
def test_the_initial_rows_are_one_draw_whatever_the_number_of_ranks(world_size):
    # one rank: a sharded table without a process group is the whole table
    ranks = [initial_shards(0, 1)] if world_size == 1 else run_distributed(initial_shards, world_size)
    for init in INITS:
        torch.manual_seed(0)
        whole = RowStorage(NUM_INIT_ROWS, 3, init=init).weight
        assert torch.equal(torch.cat([shards[init][1] for shards in ranks]), whole), init
        offsets = [shards[init][0] for shards in ranks]
        assert offsets == [sum(shard_sizes(NUM_INIT_ROWS, world_size)[:r]) for r in range(world_size)]
        assert torch.unique(whole, dim=0).shape[0] == NUM_INIT_ROWS  # no two instances share an initial row
    assert whole.norm(dim=1).sub(1).abs().max() < 1e-6  # 'unit' rows: one normalised draw
    torch.manual_seed(0)
    trained = LazySGDRows(NUM_INIT_ROWS, 3).weight
    torch.manual_seed(0)
    assert torch.equal(trained, RowStorage(NUM_INIT_ROWS, 3).weight)  # the trained rows start from the same draw


def test_unknown_keys_under_the_rows_prefix_are_unexpected():
    rows = LazySGDRows(10, 4)
    state = dict(rows.state_dict(), gathered=torch.zeros(1))  # e.g. a key of an older layout
    with pytest.raises(RuntimeError, match='Unexpected key.*"gathered"'):
        rows.load_state_dict(state)
    assert rows.load_state_dict(state, strict=False).unexpected_keys == ['gathered']


def sharded_load_without_rows(rank: int, world_size: int) -> str:
    rows = LazySGDRows(10, 4, sharded=True)
    with pytest.raises(RuntimeError) as error:
        rows.load_state_dict({'transitions': torch.zeros(0, 2, 2, dtype=torch.float64)}, strict=False)
    return str(error.value)


def test_a_sharded_table_missing_from_the_checkpoint_names_sharded_table_hook():
    for message in run_distributed(sharded_load_without_rows, 2):
        assert 'weight: the checkpoint holds none of this sharded table' in message
        assert 'ShardedTableHook' in message


def bad_index_on_rank_0(rank: int, world_size: int) -> str:
    rows = RowStorage(10, 4)
    try:
        rows.check_range(torch.tensor([3, 12]) if rank == 0 else torch.tensor([1, 2]))
    except ValueError as error:
        return str(error)
    return 'went on'


def test_an_index_out_of_range_on_one_rank_stops_every_rank():
    for message in run_distributed(bad_index_on_rank_0, 2):
        assert message.startswith('sample_idx 12 is out of range for a table of 10 rows')
