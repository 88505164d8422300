import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn

from distributed import run_distributed
from progress_output import captured_progress
from pic_plugin.engine.hooks import HardClassHook
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads.instance_cls_head import InstanceClsHead
from pic_plugin.models.utils import top_k_similar_rows

NUM_ROWS, DIM, K = 40, 8, 5


def seeded_rows(seed: int = 0) -> torch.Tensor:
    return torch.randn(NUM_ROWS, DIM, generator=torch.Generator().manual_seed(seed))


def fake_runner(head: nn.Module, epoch: int = 0, optim_wrapper=None) -> SimpleNamespace:
    model = nn.Module()
    model.head = head
    return SimpleNamespace(model=model, epoch=epoch, optim_wrapper=optim_wrapper,
                           logger=MMLogger.get_instance('test_hard_class_hook'))


def smoothed_head(sharded: bool = False, num_hard_classes: int = K) -> InstanceClsHead:
    head = InstanceClsHead(NUM_ROWS, DIM, sharded=sharded, label_smoothing=0.2, num_hard_classes=num_hard_classes)
    table = head.table
    table.weight.copy_(seeded_rows()[table.row_offset:table.row_offset + table.num_local_rows])
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
    optim = LazyCorrectedSGD(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5, momentum=0.9,
                                             weight_decay=0.5))
    for lr in (0.5, 0.4, 0.3, 0.2):
        optim.transitions.append(lr, 0.9, 0.5)
    generator = torch.Generator().manual_seed(1)
    head.table.momentum.copy_(torch.randn(NUM_ROWS, DIM, generator=generator))
    head.table.last_step.copy_(torch.randint(0, 5, (NUM_ROWS, ), generator=generator))
    current, _ = optim.bring_forward(head.table.weight.clone(), head.table.momentum.clone(),
                                     head.table.last_step.clone())
    stale_answer = top_k_similar_rows(head.table.weight, K).indices
    expected = top_k_similar_rows(current, K).indices
    assert not torch.equal(expected, stale_answer)  # the correction changes the answer

    with captured_progress() as text:
        HardClassHook(k=K).before_train_epoch(fake_runner(head, optim_wrapper=optim))

    assert re.search(rf'\] {NUM_ROWS}/{NUM_ROWS}, .*\n', text.getvalue())  # the progress bar, in rows
    assert f'hard-class search: {NUM_ROWS} rows in' in text.getvalue()
    assert torch.equal(head.hard_classes, expected)
    assert torch.allclose(head.table.weight, current)
    assert (head.table.last_step == optim.num_steps).all()


def test_schedule_begin_interval_and_the_first_epoch_of_a_resumed_run():
    head = smoothed_head()

    def searched_at(hook: HardClassHook, epoch: int) -> bool:
        head.hard_classes.fill_(-1)
        hook.before_train_epoch(fake_runner(head, epoch))
        return bool((head.hard_classes >= 0).all())

    hook = HardClassHook(k=K, interval=2, begin_epoch=1)
    assert [searched_at(hook, epoch) for epoch in range(5)] == [False, True, False, True, False]
    resumed = HardClassHook(k=K, interval=2, begin_epoch=1)
    assert [searched_at(resumed, epoch) for epoch in (4, 5, 6, 7)] == [True, True, False, True]
    assert_hard_classes_of(head.hard_classes, seeded_rows())


def test_a_head_without_the_buffer_gets_one_outside_its_checkpoints():
    head = InstanceClsHead(NUM_ROWS, DIM)  # no label smoothing: no hard_classes buffer
    HardClassHook(k=K).before_train_epoch(fake_runner(head))
    assert head.hard_classes.shape == (NUM_ROWS, K)
    assert_hard_classes_of(head.hard_classes, head.table.weight)
    assert 'hard_classes' not in head.state_dict()


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
        results.append((head.table.row_offset, head.hard_classes, text.getvalue()))
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
