"""OneHotTargets and HardClassTargets: the target columns of a step and the mass on each (full classifier Eq. 2)."""
import pytest
import torch

from pic_plugin.models.utils import HardClassTargets, OneHotTargets, RowStorage
from pic_plugin.models.utils import row_storage as row_storage_module


def test_one_hot_puts_all_mass_on_the_instance_column():
    rows = RowStorage(10, 2)
    columns, weights = OneHotTargets()(torch.tensor([3, 0, 9]), 10, rows)
    assert columns.tolist() == [[3], [0], [9]]
    assert weights.dtype == torch.float32 and weights.tolist() == [[1.], [1.], [1.]]
    # a sample whose row lives on another rank has no column here (-1): its mass is counted by the owner
    columns, _ = OneHotTargets()(torch.tensor([-2, 4, 5]), 5, rows)
    assert columns.tolist() == [[-1], [4], [-1]]
    OneHotTargets().check(1)


def smoothed(num_rows=10, alpha=0.2, k=3):
    rows = RowStorage(num_rows, 2)
    targets = HardClassTargets(alpha, k)
    targets.check(num_rows)
    targets.allocate(rows)
    return rows, targets


def test_hard_classes_start_unknown_and_stay_out_of_the_state_dict():
    _, targets = smoothed()
    assert targets.hard_classes.shape == (10, 3) and (targets.hard_classes == -1).all()
    assert 'hard_classes' not in targets.state_dict()  # HardClassHook searches again in every run


def test_smoothed_weights_sum_to_one_with_alpha_over_k_on_each_hard_class():
    rows, targets = smoothed(alpha=0.2, k=3)
    hard = torch.full((10, 3), -1)
    hard[4] = torch.tensor([7, 1, 9])
    hard[6] = torch.tensor([2, -1, -1])  # one hard class known so far
    targets.set_hard_classes(hard)
    columns, weights = targets(torch.tensor([4, 6, 0]), 10, rows)
    assert columns.tolist() == [[4, 7, 1, 9], [6, 2, -1, -1], [0, -1, -1, -1]]
    expected = torch.tensor([[0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3],
                             [1 - 0.2 / 3, 0.2 / 3, 0, 0],  # unknown hard classes keep their mass on the instance
                             [1, 0, 0, 0]])
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3), rtol=0, atol=1e-6)


def test_hard_classes_of_a_shard_map_to_its_columns_and_keep_their_mass_when_elsewhere(monkeypatch):
    monkeypatch.setattr(row_storage_module, 'get_dist_info', lambda: (1, 2))
    rows = RowStorage(10, 2, sharded=True)  # rank 1 owns rows [5, 10)
    targets = HardClassTargets(0.2, 2)
    targets.allocate(rows)
    hard = torch.full((5, 2), -1)
    hard[2] = torch.tensor([9, 1])  # instance 7: hard class 9 here, hard class 1 on rank 0
    targets.set_hard_classes(hard)
    columns, weights = targets(torch.tensor([2]), 5, rows)  # sample of instance 7, column 2 of this shard
    assert columns.tolist() == [[2, 4, -1]]
    torch.testing.assert_close(weights, torch.tensor([[0.8, 0.1, 0.1]]), rtol=0, atol=1e-7)  # sums to 1 over ranks


def test_set_hard_classes_refuses_another_shape_naming_k():
    _, targets = smoothed(k=3)
    with pytest.raises(ValueError, match=r'got hard classes of shape \(10, 4\) for \(10, 3\) \(rows of this rank, k\): '
                       r"set HardClassHook's k to model\.head\.num_hard_classes=3"):
        targets.set_hard_classes(torch.zeros(10, 4, dtype=torch.long))


def test_k_must_leave_room_in_the_table_and_alpha_must_smooth():
    with pytest.raises(ValueError, match=r'num_hard_classes=10 must lie in \[1, num_classes - 1 = 9\]: lower '
                       r'model\.head\.num_hard_classes'):
        HardClassTargets(0.2, 10).check(10)
    with pytest.raises(ValueError, match=r'num_hard_classes=0 must lie in'):
        HardClassTargets(0.2, 0).check(10)
    HardClassTargets(0.2, 9).check(10)
    for alpha in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=rf'label_smoothing={alpha} must lie in .*the paper uses 0\.2'):
            HardClassTargets(alpha, 3)
