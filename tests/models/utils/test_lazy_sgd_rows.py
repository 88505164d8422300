"""LazySGDRows: PIC Eq. 2 on the rows a step uses, Eq. 3 for the others, against dense torch.optim.SGD in float64.

Everything runs in float64, so that the comparisons check the update rule and not float32 rounding: after a few
dozen steps lazy and dense SGD differ by float64 rounding (below 1e-13 here), while a wrong rule (a missed
weight-decay or momentum term, a transition applied once too often) moves rows by more than 1e-3.
"""
import pytest
import torch

from distributed import run_distributed
from pic_plugin.models.utils import LazySGDRows, RecentNegatives
from pic_plugin.models.utils import row_storage as row_storage_module
from pic_plugin.models.utils.lazy_sgd_rows import HandedOut, slot_changes

NUM_ROWS, DIM = 40, 3
CPU = torch.device('cpu')
F64 = torch.float64


def float64_rows(seed: int = 0, num_rows: int = NUM_ROWS) -> LazySGDRows:
    torch.manual_seed(seed)
    return LazySGDRows(num_rows, DIM, init_std=1.0, dtype=F64)


def transition(lr: float, momentum: float, weight_decay: float) -> torch.Tensor:
    """PIC Eq. 3's ``A`` of one step, written out."""
    return torch.tensor([[1 - lr * weight_decay, -lr * momentum], [weight_decay, momentum]], dtype=F64)


def sequential(weight, momentum, hyper_params):
    """``[w; u]`` after the zero-gradient steps ``hyper_params``, one dense SGD step (Eq. 2, ``g = 0``) at a time."""
    for lr, m, weight_decay in hyper_params:
        momentum = m * momentum + weight_decay * weight
        weight = weight - lr * momentum
    return weight, momentum


def lazy_step(rows: LazySGDRows, indices, grads, lr, momentum, weight_decay, **kwargs) -> torch.Tensor:
    """One training step in plain PyTorch: the rows of ``indices`` get the loss gradient ``grads``."""
    weight = rows.rows_for_step(indices, CPU)
    (weight * grads).sum().backward()  # d/dw = grads exactly
    rows.step(lr, momentum, weight_decay, **kwargs)
    return weight


def schedule(step: int):
    """A warm-up then a decay, with a changing momentum: every step has its own A_j."""
    return 0.5 * min(1.0, (step + 1) / 5) / (1 + 0.1 * step), 0.9 - 0.01 * (step % 3), 1e-2


def test_new_rows_start_with_zero_momentum_at_step_0():
    rows = LazySGDRows(NUM_ROWS, DIM)
    assert list(rows.columns()) == ['weight', 'momentum', 'last_step']
    assert rows.momentum.dtype == rows.weight.dtype == torch.float32 and rows.last_step.dtype == torch.int64
    assert not rows.momentum.any() and not rows.last_step.any()
    assert rows.num_steps == 0 and rows.handed_out is None


def test_rows_for_step_hands_out_leaves_until_the_step_and_refuses_a_second_hand_out():
    rows = float64_rows()
    indices = torch.tensor([3, 14, 15])
    weight = rows.rows_for_step(indices, CPU)
    assert weight.is_leaf and weight.requires_grad and weight.shape == (3, DIM)
    assert torch.equal(weight.detach(), rows.weight[indices])  # no step yet: nothing to bring forward
    assert isinstance(rows.handed_out, HandedOut) and rows.handed_out.weight is weight
    assert torch.equal(rows.handed_out.local_indices, indices)
    with pytest.raises(RuntimeError, match=r"never updated.*type='LazyCorrectedSGD'.*rows\.step\(\.\.\.\)"):
        rows.rows_for_step(indices, CPU)
    rows.step(0.1, 0.9, 1e-4)
    assert rows.handed_out is None
    rows.rows_for_step(indices, CPU)  # the next step may hand out rows again


def test_step_is_eq2_on_the_handed_out_rows_and_leaves_the_others_stored_as_they_were():
    rows = float64_rows()
    before = rows.weight.clone()
    indices, lr, m, wd = torch.tensor([1, 3]), 0.1, 0.9, 0.01
    grads = torch.randn(2, DIM, dtype=F64)
    lazy_step(rows, indices, grads, lr, m, wd)
    momentum = grads + wd * before[indices]  # m * 0 + (g + lambda w)
    # float64 rounding (a fused multiply-add, or not) is all that may differ
    torch.testing.assert_close(rows.momentum[indices], momentum, rtol=0, atol=1e-15)
    torch.testing.assert_close(rows.weight[indices], before[indices] - lr * momentum, rtol=0, atol=1e-15)
    untouched = torch.ones(NUM_ROWS, dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(rows.weight[untouched], before[untouched]) and not rows.momentum[untouched].any()
    assert rows.last_step.tolist() == [0, 1, 0, 1] + [0] * (NUM_ROWS - 4)  # written for step 1
    assert rows.num_steps == 1
    # the second step on row 1 carries its momentum
    grad = torch.randn(1, DIM, dtype=F64)
    previous_weight, previous_momentum = rows.weight[1].clone(), rows.momentum[1].clone()
    lazy_step(rows, torch.tensor([1]), grad, 0.05, 0.8, wd)
    expected_momentum = 0.8 * previous_momentum + grad[0] + wd * previous_weight
    torch.testing.assert_close(rows.momentum[1], expected_momentum, rtol=0, atol=1e-15)
    torch.testing.assert_close(rows.weight[1], previous_weight - 0.05 * expected_momentum, rtol=0, atol=1e-15)


def test_a_step_without_momentum_still_stores_the_step_direction_as_the_rows_momentum():
    # m = 0 takes the other branch of the update (torch's fused kernel keeps no momentum then); Eq. 2 still sets
    # u = g + lambda w, which the next step's m * u reads once the momentum is back
    rows = float64_rows()
    lazy_step(rows, torch.tensor([1]), torch.randn(1, DIM, dtype=F64), 0.1, 0.9, 0.01)
    before, grad = rows.weight[1].clone(), torch.randn(1, DIM, dtype=F64)
    lazy_step(rows, torch.tensor([1]), grad, 0.1, 0.0, 0.01)
    torch.testing.assert_close(rows.momentum[1], grad[0] + 0.01 * before, rtol=0, atol=1e-15)
    torch.testing.assert_close(rows.weight[1], before - 0.1 * (grad[0] + 0.01 * before), rtol=0, atol=1e-15)


def test_bring_forward_applies_the_transitions_of_the_steps_a_row_missed():
    rows = float64_rows()
    hyper_params = [schedule(step) for step in range(6)]
    for step in hyper_params:
        rows.step(*step)  # nothing handed out: every row misses the step
    weight, momentum = torch.randn(4, DIM, dtype=F64), torch.randn(4, DIM, dtype=F64)
    last_step = torch.tensor([0, 2, 5, 6])
    new_weight, new_momentum = rows.bring_forward(weight.clone(), momentum.clone(), last_step)  # gathered copies
    for row, start in enumerate(last_step.tolist()):
        expected = sequential(weight[row], momentum[row], hyper_params[start:])
        torch.testing.assert_close(new_weight[row], expected[0], rtol=0, atol=1e-14)
        torch.testing.assert_close(new_momentum[row], expected[1], rtol=0, atol=1e-14)
    assert torch.equal(new_weight[3], weight[3]) and torch.equal(new_momentum[3], momentum[3])  # up to date
    empty = torch.empty(0, DIM, dtype=F64)
    assert rows.bring_forward(empty, empty, torch.empty(0, dtype=torch.long))[0] is empty


def dense_and_lazy(num_steps: int, chunk_size: int, seed: int = 0, **step_kwargs):
    """The same training of rows visited with probability 0.5, 0.1 or 0.02 per step (4 never), by LazySGDRows and
    by dense torch.optim.SGD over the whole table with zero gradients for the rows not in the batch."""
    rows = float64_rows(seed)
    dense = torch.nn.Parameter(rows.weight.clone())
    optimizer = torch.optim.SGD([dense], lr=1.0, momentum=0.9, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed + 1)
    probability = torch.tensor([0.5, 0.1, 0.02], dtype=F64)[torch.arange(NUM_ROWS) % 3]
    probability[:4] = 0
    for step in range(num_steps):
        lr, momentum, weight_decay = schedule(step)
        indices = torch.nonzero(torch.rand(NUM_ROWS, generator=generator, dtype=F64) < probability).flatten()
        grads = torch.randn(len(indices), DIM, generator=generator, dtype=F64)
        lazy_step(rows, indices, grads, lr, momentum, weight_decay, **step_kwargs)
        optimizer.param_groups[0].update(lr=lr, momentum=momentum, weight_decay=weight_decay)
        dense.grad = torch.zeros_like(dense).index_put_((indices, ), grads)
        optimizer.step()
    rows.bring_all_forward(chunk_size)
    return rows, dense.detach(), optimizer.state[dense]['momentum_buffer']


@pytest.mark.parametrize('chunk_size', [7, 65536])
def test_lazy_rows_brought_forward_equal_dense_sgd_over_the_whole_table(chunk_size):
    rows, dense, dense_momentum = dense_and_lazy(30, chunk_size)
    torch.testing.assert_close(rows.weight, dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(rows.momentum, dense_momentum, rtol=0, atol=1e-12)
    assert (rows.last_step == 30).all() and rows.num_steps == 30
    # rows never in a batch still moved (weight decay, then momentum), as dense SGD moves them
    initial = float64_rows().weight[:4]
    assert ((rows.weight[:4] - initial).norm(dim=1) / initial.norm(dim=1)).min() > 1e-2
    weight, momentum = rows.weight.clone(), rows.momentum.clone()
    rows.bring_all_forward()  # already at the current step: nothing changes
    assert torch.equal(rows.weight, weight) and torch.equal(rows.momentum, momentum)


def test_without_correction_the_rows_a_step_skips_stay_as_they_are():
    rows, _, _ = dense_and_lazy(10, 65536, correction=False)
    assert torch.equal(rows.weight[:4], float64_rows().weight[:4])  # never used: never moved
    assert not rows.momentum[:4].any()
    identity = torch.eye(2, dtype=F64).expand(10, 2, 2)
    assert torch.equal(rows.state_dict()['transitions'], identity)


def test_a_skipped_step_moves_no_row_and_is_the_identity_for_every_row():
    rows = float64_rows()
    lazy_step(rows, torch.tensor([0, 1]), torch.ones(2, DIM, dtype=F64), 0.1, 0.9, 0.01)
    state = {name: tensor.clone() for name, tensor in rows.columns().items()}
    lazy_step(rows, torch.tensor([1, 2]), torch.ones(2, DIM, dtype=F64), 0.1, 0.9, 0.01, skipped=True)
    assert rows.num_steps == 2 and rows.handed_out is None
    for name, tensor in rows.columns().items():
        assert torch.equal(tensor, state[name]), name
    rows.bring_all_forward()
    assert torch.equal(rows.weight[[0, 1]], state['weight'][[0, 1]])  # written for step 1, which was the identity
    assert torch.equal(rows.state_dict()['transitions'][1], torch.eye(2, dtype=F64))


def test_a_row_handed_out_without_a_gradient_moves_as_one_the_step_skips():
    rows = float64_rows()
    rows.weight[1] = rows.weight[0]
    rows.rows_for_step(torch.tensor([0]), CPU)  # no backward: no .grad
    rows.step(0.1, 0.9, 0.01)
    rows.bring_all_forward()
    torch.testing.assert_close(rows.weight[0], rows.weight[1], rtol=0, atol=1e-15)
    torch.testing.assert_close(rows.momentum[0], rows.momentum[1], rtol=0, atol=1e-15)


def test_assign_gives_rows_new_values_with_zero_momentum_as_of_the_current_step():
    rows = float64_rows()
    for step in range(3):
        lazy_step(rows, torch.tensor([2, 5]), torch.randn(2, DIM, dtype=F64), *schedule(step))
    assigned = torch.randn(2, DIM, dtype=F64)
    rows.assign(torch.tensor([2, 5]), assigned)
    assert torch.equal(rows.weight[[2, 5]], assigned) and not rows.momentum[[2, 5]].any()
    assert rows.last_step[[2, 5]].tolist() == [3, 3]
    weight = rows.rows_for_step(torch.tensor([2]), CPU)
    assert torch.equal(weight.detach(), assigned[:1])  # nothing to bring forward
    rows.step(*schedule(3))
    rows.step(*schedule(4))
    rows.bring_all_forward()
    expected = sequential(assigned[1], torch.zeros(DIM, dtype=F64), [schedule(3), schedule(4)])
    torch.testing.assert_close(rows.weight[5], expected[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(rows.momentum[5], expected[1], rtol=0, atol=1e-15)


def trained_rows(num_steps: int = 4, seed: int = 0) -> LazySGDRows:
    rows = float64_rows(seed)
    generator = torch.Generator().manual_seed(7)
    for step in range(num_steps):
        indices = torch.randperm(NUM_ROWS, generator=generator)[:6]
        lazy_step(rows, indices, torch.randn(6, DIM, generator=generator, dtype=F64), *schedule(step))
    return rows


def test_state_dict_round_trip_with_the_transitions_resumes_exactly():
    rows = trained_rows()
    state = rows.state_dict()
    assert set(state) == {'weight', 'momentum', 'last_step', 'transitions'}
    assert state['transitions'].dtype == F64
    torch.testing.assert_close(state['transitions'], torch.stack([transition(*schedule(s)) for s in range(4)]),
                               rtol=1e-15, atol=0)
    restored = float64_rows(seed=123)  # a fresh process: another init
    restored.load_state_dict(state)
    assert restored.num_steps == 4
    for name, tensor in rows.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
    # both keep training alike, bringing forward rows of every age through the loaded transitions
    indices, grads = torch.arange(0, NUM_ROWS, 3), torch.randn(len(range(0, NUM_ROWS, 3)), DIM, dtype=F64)
    for each in (rows, restored):
        lazy_step(each, indices, grads, *schedule(4))
        each.bring_all_forward()
    for name, tensor in rows.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name


def test_a_shard_loads_its_rows_and_all_transitions_of_a_whole_table(monkeypatch):
    rows = trained_rows()
    state = rows.state_dict()
    monkeypatch.setattr(row_storage_module, 'get_dist_info', lambda: (1, 2))
    shard = LazySGDRows(NUM_ROWS, DIM, dtype=F64, sharded=True)
    shard.load_state_dict(state)
    assert (shard.row_offset, shard.num_local_rows, shard.num_steps) == (20, 20, 4)
    for name in ('weight', 'momentum', 'last_step'):
        assert torch.equal(getattr(shard, name), state[name][20:]), name
    # a shard saves no rows (ShardedTableHook assembles them), only the transitions, alike on every rank
    assert set(shard.state_dict()) == {'transitions'}
    assert torch.equal(shard.state_dict()['transitions'], state['transitions'])
    shard.bring_all_forward()
    rows.bring_all_forward()
    assert torch.equal(shard.weight, rows.weight[20:]) and torch.equal(shard.momentum, rows.momentum[20:])


def test_damaged_transitions_are_refused():
    state = trained_rows().state_dict()
    newest = int(state['last_step'].max())
    assert newest == 4
    truncated = dict(state, transitions=state['transitions'][:2])
    with pytest.raises(RuntimeError, match=r'last_step: rows were last updated at step 3, but transitions holds only '
                       r'2 steps: the checkpoint is damaged'):
        float64_rows().load_state_dict(truncated)
    with pytest.raises(ValueError, match=r'transitions of shape \(4, 4\) do not match num_steps=4: the state dict '
                       'is damaged'):
        float64_rows().load_state_dict(dict(state, transitions=state['transitions'].reshape(4, 4)))
    missing = {name: tensor for name, tensor in state.items() if name != 'transitions'}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "transitions"'):
        float64_rows().load_state_dict(missing)


# ---- two processes (gloo on the CPU) ------------------------------------------------------------------------
def replicated_step_rank(rank, world_size):
    """Every rank holds all rows (not sharded) and steps the same rows with its own share's gradient."""
    rows = float64_rows()
    grads = torch.randn(3, DIM, generator=torch.Generator().manual_seed(10 + rank), dtype=F64)
    lazy_step(rows, torch.tensor([4, 8, 9]), grads, 0.1, 0.9, 0.01)
    return rows.weight, rows.momentum


def test_replicated_rows_step_with_the_gradient_averaged_over_ranks():
    ranks = run_distributed(replicated_step_rank, 2)
    rows = float64_rows()
    grads = [torch.randn(3, DIM, generator=torch.Generator().manual_seed(10 + r), dtype=F64) for r in range(2)]
    lazy_step(rows, torch.tensor([4, 8, 9]), (grads[0] + grads[1]) / 2, 0.1, 0.9, 0.01)  # as DDP averages
    for weight, momentum in ranks:
        torch.testing.assert_close(weight, rows.weight, rtol=0, atol=1e-15)
        torch.testing.assert_close(momentum, rows.momentum, rtol=0, atol=1e-15)
    assert torch.equal(ranks[0][0], ranks[1][0])  # the replicas stay identical


def slotted_training(num_steps: int, read_between=(), read_within=(), num_negatives: int = 8, batch: int = 4):
    """Rows in the ``K + G`` slots of the recent negatives (a FIFO of ``K``, then the batch of ``G``) trained
    through ``rows_in_slots``, and by dense torch.optim.SGD over the whole table (zero gradients for the rows in no
    slot). The table is read from outside after the steps ``read_between`` and between backward and ``step`` at
    ``read_within``. Returns the lazy rows brought forward, the dense weight and momentum, and per step the rows
    gathered from the table and the slots that hold a row."""
    rows = float64_rows()
    dense = torch.nn.Parameter(rows.weight.clone())
    optimizer = torch.optim.SGD([dense], lr=1.0, momentum=0.9, weight_decay=1e-2)
    negatives = RecentNegatives(num_negatives)
    generator = torch.Generator().manual_seed(1)
    gathered, live_slots = [], []
    gather = rows.gather

    def counting_gather(local_indices, device, name='weight'):
        if name == 'weight':
            gathered[-1] += local_indices.numel()
        return gather(local_indices, device, name)

    rows.gather = counting_gather
    for step in range(num_steps):
        gathered.append(0)
        lr, momentum, weight_decay = schedule(step)
        slots, _ = negatives(torch.randperm(NUM_ROWS, generator=generator)[:batch], rows)  # (K + G,)
        live = slots >= 0
        live_slots.append(int(live.sum()))
        grads = torch.randn(len(slots), DIM, generator=generator, dtype=F64) * live[:, None]  # none for empty slots
        weight = rows.rows_in_slots(slots, CPU)
        (weight * grads).sum().backward()
        if step in read_within:
            rows.columns()
        rows.step(lr, momentum, weight_decay)
        if step in read_between:
            table = rows.weight  # the whole table, the kept rows handed back into it
            assert rows.kept is None and table.shape == (NUM_ROWS, DIM)
        optimizer.param_groups[0].update(lr=lr, momentum=momentum, weight_decay=weight_decay)
        dense.grad = torch.zeros_like(dense).index_put_((slots[live], ), grads[live])
        optimizer.step()
    rows.gather = gather
    rows.bring_all_forward()
    return rows, dense.detach(), optimizer.state[dense]['momentum_buffer'], (gathered, live_slots)


@pytest.mark.parametrize('reads', [dict(), dict(read_between=(5, 6, 11)), dict(read_within=(3, 9))])
def test_rows_kept_in_slots_equal_dense_sgd_whatever_reads_the_table_between_or_within_steps(reads):
    rows, dense, dense_momentum, _ = slotted_training(20, **reads)
    torch.testing.assert_close(rows.weight, dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(rows.momentum, dense_momentum, rtol=0, atol=1e-12)
    assert (rows.last_step == 20).all()


def test_rows_kept_in_slots_move_only_the_slots_whose_row_changed():
    """A step gathers at most the ``G`` rows of its batch from the table, not ``K + G`` (the last batch's rows
    move into the FIFO's slots on the device); after a read of the table from outside, every row again."""
    _, _, _, (gathered, live_slots) = slotted_training(12, read_between=(7, ))
    assert all(count <= 4 for count in gathered[:8]) and gathered[0] == 4
    assert gathered[8] == live_slots[8] > 8  # every row of the step, the table having been read after step 7
    assert all(count <= 4 for count in gathered[9:])


def test_slot_changes_tell_arriving_moving_and_leaving_rows_apart():
    before = torch.tensor([10, 11, 12, -1, 20, 21])
    after = torch.tensor([20, 11, 13, 12, -1, 30])  # 20 and 12 move, 13 and 30 arrive, 10 and 21 leave
    changes = slot_changes(before, after)
    assert changes.arriving.tolist() == [2, 5]
    assert sorted(zip(changes.moves_from.tolist(), changes.moves_to.tolist())) == [(2, 3), (4, 0)]
    assert changes.leaving.tolist() == [0, 5]
    assert all(t.numel() == 0 for t in slot_changes(before, before.clone()))


def test_a_column_read_as_an_attribute_is_the_whole_table_and_cannot_be_replaced():
    rows = float64_rows()
    slots = torch.tensor([5, -1, 7])
    weight = rows.rows_in_slots(slots, CPU)
    assert weight.shape == (3, DIM) and weight.is_leaf and rows.handed_out.kept
    weight[[0, 2]].sum().backward()
    rows.step(0.1, 0.9, 0.0)
    assert rows.kept is not None
    assert torch.equal(rows.columns()['last_step'][[5, 7]], torch.tensor([1, 1]))  # written back as of step 1
    assert rows.kept is None  # columns() handed the kept rows back; the step's update is in the table now
    rows.rows_in_slots(slots, CPU).sum().backward()
    rows.step(0.1, 0.9, 0.0)
    table = rows.weight  # an attribute read is columns()'s too
    assert rows.kept is None and torch.equal(rows.last_step[[5, 7]], torch.tensor([2, 2]))
    assert torch.equal(table, rows.columns()['weight'])
    with pytest.raises(AttributeError, match=r"'weight' is a column of the table and cannot be replaced: change "
                                             r"its rows with write\(\.\.\.\), or in place through columns\(\)"):
        rows.weight = torch.zeros(NUM_ROWS, DIM)
