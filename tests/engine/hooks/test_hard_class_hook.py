import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn

from distributed import run_distributed
from pic_plugin.engine.hooks import HardClassHook
from pic_plugin.models.heads.instance_cls_head import InstanceClsHead
from pic_plugin.models.utils import top_k_similar_rows
from progress_output import captured_progress

NUM_ROWS, DIM, K = 40, 8, 5


def seeded_rows(seed: int = 0) -> torch.Tensor:
    return torch.randn(NUM_ROWS, DIM, generator=torch.Generator().manual_seed(seed))


def fake_runner(head: nn.Module, epoch: int = 0) -> SimpleNamespace:
    model = nn.Module()
    model.head = head
    return SimpleNamespace(model=model, epoch=epoch, logger=MMLogger.get_instance('test_hard_class_hook'))


def smoothed_head(sharded: bool = False, num_hard_classes: int = K) -> InstanceClsHead:
    head = InstanceClsHead(NUM_ROWS, DIM, sharded=sharded, label_smoothing=0.2, num_hard_classes=num_hard_classes)
    rows = head.rows
    rows.weight.copy_(seeded_rows()[rows.row_offset:rows.row_offset + rows.num_local_rows])
    return head


def assert_hard_classes_of(hard_classes: torch.Tensor, rows: torch.Tensor, first_row: int = 0) -> None:
    """``hard_classes`` (n, K) are the K rows most similar to rows ``first_row...`` (ties in any order)."""
    unit = F.normalize(rows.double(), dim=1)
    similarities = unit @ unit.t()
    similarities.fill_diagonal_(-math.inf)
    similarities = similarities[first_row:first_row + hard_classes.shape[0]]
    expected = similarities.topk(K, dim=1).values
    assert torch.allclose(similarities.gather(1, hard_classes).sort(dim=1, descending=True).values, expected)


def test_rows_are_brought_forward_before_their_hard_classes_are_found():
    head = smoothed_head()
    rows = head.rows
    for lr in (0.5, 0.4, 0.3, 0.2):  # four steps that used none of the rows
        rows.step(lr, 0.9, 0.5)
    generator = torch.Generator().manual_seed(1)
    rows.momentum.copy_(torch.randn(NUM_ROWS, DIM, generator=generator))
    rows.last_step.copy_(torch.randint(0, 5, (NUM_ROWS, ), generator=generator))
    current, current_momentum = rows.bring_forward(rows.weight.clone(), rows.momentum.clone(),
                                                   rows.last_step.clone())
    stale_answer = top_k_similar_rows(rows.weight, K).indices
    expected = top_k_similar_rows(current, K).indices
    assert not torch.equal(expected, stale_answer)  # the correction changes the answer

    with captured_progress() as text:
        HardClassHook(k=K).before_train_epoch(fake_runner(head))

    assert re.search(rf'\] {NUM_ROWS}/{NUM_ROWS}, .*\n', text.getvalue())  # the progress bar, in rows
    assert f'hard-class search: {NUM_ROWS} rows in' in text.getvalue()
    assert torch.equal(head.targets.hard_classes, expected)
    assert torch.allclose(rows.weight, current) and torch.allclose(rows.momentum, current_momentum)
    assert (rows.last_step == rows.num_steps).all() and rows.num_steps == 4


def test_schedule_begin_interval_and_the_first_epoch_of_a_resumed_run():
    head = smoothed_head()

    def searched_at(hook: HardClassHook, epoch: int) -> bool:
        head.targets.hard_classes.fill_(-1)
        hook.before_train_epoch(fake_runner(head, epoch))
        return bool((head.targets.hard_classes >= 0).all())

    hook = HardClassHook(k=K, interval=2, begin_epoch=1)
    assert [searched_at(hook, epoch) for epoch in range(5)] == [False, True, False, True, False]
    resumed = HardClassHook(k=K, interval=2, begin_epoch=1)
    assert [searched_at(resumed, epoch) for epoch in (4, 5, 6, 7)] == [True, True, False, True]
    assert_hard_classes_of(head.targets.hard_classes, seeded_rows())


def test_the_hard_classes_stay_out_of_the_checkpoints():
    head = smoothed_head()
    HardClassHook(k=K).before_train_epoch(fake_runner(head))
    assert head.targets.hard_classes.shape == (NUM_ROWS, K)
    assert not any('hard_classes' in key for key in head.state_dict())


SMOOTHING_IS_0 = ('HardClassHook finds hard classes for label smoothing, but model.head.label_smoothing is 0: set it '
                  r'\(the paper uses 0.2\), or remove HardClassHook from custom_hooks.')


def test_a_head_without_label_smoothing_is_refused():
    head = InstanceClsHead(NUM_ROWS, DIM)  # label_smoothing=0: one-hot targets, nothing to smooth onto
    with pytest.raises(ValueError, match=SMOOTHING_IS_0):
        HardClassHook(k=K).before_train_epoch(fake_runner(head))
    with pytest.raises(ValueError, match=SMOOTHING_IS_0):
        head.set_hard_classes(torch.zeros(NUM_ROWS, K, dtype=torch.long))
    assert head.num_hard_classes is None
    assert not any('hard_classes' in name for name, _ in head.named_buffers())


def test_k_other_than_the_heads_is_refused():
    with pytest.raises(ValueError, match=r'HardClassHook\(k=7\) .* keeps 5: set k to model.head.num_hard_classes'):
        HardClassHook(k=7).before_train_epoch(fake_runner(smoothed_head()))


def test_a_model_without_an_instance_classifier_is_refused():
    with pytest.raises(ValueError, match='HardClassHook works on an instance classifier.*Linear'):
        HardClassHook(k=K).before_train_epoch(fake_runner(nn.Linear(2, 2)))


def hook_rank(rank: int, world_size: int):
    """The hard classes a rank finds for a sharded table, then for a table replicated on every rank; its output."""
    results = []
    for sharded in (True, False):
        head = smoothed_head(sharded=sharded)
        runner = fake_runner(head)
        with captured_progress() as text:
            HardClassHook(k=K, chunk_size=7, key_block_size=9).before_train_epoch(runner)
        results.append((head.rows.row_offset, head.targets.hard_classes, text.getvalue()))
    return results


def test_two_processes_get_the_hard_classes_of_their_rows_sharded_or_replicated():
    (sharded_0, replicated_0), (sharded_1, replicated_1) = run_distributed(hook_rank, 2)
    rows = seeded_rows()
    # rank 0 shows its 20 rows searched against both shards; rank 1 shows nothing
    for _, _, output in (sharded_0, replicated_0):
        assert re.search(r'\] 40/40, .*\n', output), output
        assert 'hard-class search (2 shards, rows counted once per shard): 40 rows in' in output
    for _, _, output in (sharded_1, replicated_1):
        assert 'hard-class search (' not in output and '/40' not in output
    for offset, hard_classes, _ in (sharded_0, sharded_1):
        assert hard_classes.shape == (NUM_ROWS // 2, K)
        assert_hard_classes_of(hard_classes, rows, first_row=offset)
    # each rank searched half of the replicated rows; both hold all of them
    assert_hard_classes_of(replicated_0[1], rows)
    assert torch.equal(replicated_0[1], replicated_1[1])
