"""AllNegatives and RecentNegatives: which rows a step scores against, and each sample's column among them."""
import pytest
import torch

from pic_plugin.models.utils import AllNegatives, RecentNegatives, RowStorage
from pic_plugin.models.utils import row_storage as row_storage_module


def test_all_negatives_are_every_local_row_and_a_sample_s_column_is_its_local_row(monkeypatch):
    rows = RowStorage(10, 2)
    classes, positions = AllNegatives()(torch.tensor([7, 0, 7]), rows)
    assert classes.tolist() == list(range(10)) and positions.tolist() == [7, 0, 7]
    monkeypatch.setattr(row_storage_module, 'get_dist_info', lambda: (1, 2))
    shard = RowStorage(10, 2, sharded=True)  # rank 1 owns rows [5, 10)
    classes, positions = AllNegatives()(torch.tensor([7, 3, 9]), shard)
    assert classes.tolist() == list(range(5))
    assert positions.tolist() == [2, -2, 4]  # row 3 lives on rank 0: outside [0, 5)
    assert AllNegatives().columns_of(torch.tensor([7, 3, 9]), classes, shard).tolist() == [2, -1, 4]
    AllNegatives().check(1)  # any table size works


def test_recent_negatives_are_the_fifo_then_the_batch_in_slots_each_instance_once():
    """Slot ``s < K`` holds FIFO entry ``s``, the next ``G`` slots the batch; -1 for a slot without a class."""
    rows = RowStorage(100, 2)
    negatives = RecentNegatives(5)
    assert negatives.recent_indices.tolist() == [-1] * 5 and int(negatives.recent_head) == 0  # empty slots
    classes, positions = negatives(torch.tensor([12, 10, 11, 10]), rows)  # image 10 twice
    assert classes.tolist() == [-1, -1, -1, -1, -1, 12, 10, 11, -1]  # only the batch: the FIFO is empty
    assert positions.tolist() == [5, 6, 7, 6] and torch.equal(classes[positions], torch.tensor([12, 10, 11, 10]))
    assert negatives.recent_indices.tolist() == [12, 10, 11, 10, -1] and int(negatives.recent_head) == 4
    classes, positions = negatives(torch.tensor([30, 3]), rows)
    assert classes.tolist() == [12, 10, 11, -1, -1, 30, 3]  # the FIFO's rows, then the batch's, each once
    assert torch.equal(classes[positions], torch.tensor([30, 3]))
    assert negatives.recent_indices.tolist() == [3, 10, 11, 10, 30]  # 30 and 3 entered slots 4 and 0
    # an instance of the batch that is recent too keeps its FIFO slot; of two FIFO entries, the first counts
    classes, positions = negatives(torch.tensor([11, 4]), rows)
    assert classes.tolist() == [3, 10, 11, -1, 30, -1, 4] and positions.tolist() == [2, 6]
    assert negatives.columns_of(torch.tensor([3, 4, 99]), classes, rows).tolist() == [0, 6, -1]


def test_the_fifo_wraps_around_keeping_the_k_most_recent_positives():
    rows = RowStorage(100, 2)
    negatives = RecentNegatives(5)
    negatives(torch.tensor([10, 11, 12]), rows)
    negatives(torch.tensor([20, 21, 22]), rows)  # slots 3, 4, then 0
    assert negatives.recent_indices.tolist() == [22, 11, 12, 20, 21] and int(negatives.recent_head) == 1
    classes, _ = negatives(torch.tensor([40]), rows)
    assert classes.tolist() == [22, 11, 12, 20, 21, 40]  # 10 is gone: it was the oldest; each keeps its slot
    assert negatives.recent_indices.tolist() == [22, 40, 12, 20, 21] and int(negatives.recent_head) == 2
    # a batch longer than the FIFO leaves its last K in order
    negatives(torch.arange(50, 57), rows)
    assert negatives.recent_indices.tolist() == [55, 56, 52, 53, 54] and int(negatives.recent_head) == 2


def test_the_fifo_is_in_the_state_dict_so_a_resumed_run_samples_alike():
    rows = RowStorage(100, 2)
    negatives = RecentNegatives(4)
    for batch in ([1, 2, 3], [4, 5], [6]):
        negatives(torch.tensor(batch), rows)
    state = negatives.state_dict()
    assert set(state) == {'recent_indices', 'recent_head'}
    resumed = RecentNegatives(4)
    resumed.load_state_dict(state)
    for a, b in zip(resumed(torch.tensor([9]), rows), negatives(torch.tensor([9]), rows)):
        assert torch.equal(a, b)


def test_k_must_be_positive_and_fit_in_the_table():
    with pytest.raises(ValueError, match=r'num_negatives=0 must be positive \(PIC uses 65536\)'):
        RecentNegatives(0)
    RecentNegatives(10).check(10)
    with pytest.raises(ValueError, match=r"num_negatives=11 must lie in \[1, num_classes=10\]: lower "
                       r"model\.head\.num_negatives for a small data set, or use negatives='full'"):
        RecentNegatives(11).check(10)


def test_a_checkpoint_of_another_k_names_the_config_key():
    with pytest.raises(RuntimeError, match=r"recent_indices: the checkpoint holds \(8,\) but this model has \(4,\): "
                                           r"set model\.head\.num_negatives to the checkpoint's K\."):
        RecentNegatives(4).load_state_dict(RecentNegatives(8).state_dict())
