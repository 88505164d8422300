"""ShardedTableHook gathers every shard exactly before the saves that CheckpointHook will make, and rank 0's
checkpoint then holds the whole table."""
from types import SimpleNamespace
from unittest.mock import Mock

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from distributed import run_distributed
from pic_plugin.engine.hooks import ShardedTableHook, sharded_table_hook
from pic_plugin.engine.hooks.sharded_table_hook import saves_best
from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.utils import LazySGDRows

COLUMNS = ('weight', 'momentum', 'last_step')


def gathered_after(rank, world_size, checkpoint_kwargs, max_iters):
    """Run the hook over ``max_iters`` iterations, saving as CheckpointHook would; return the iterations (1-based)
    after which this rank held the whole table, and the last-update steps that rank 0's saves held."""
    table = LazySGDRows(11, 2, sharded=True)  # 6 + 5 rows
    table.last_step.fill_(rank + 1)
    runner = SimpleNamespace(hooks=[CheckpointHook(**checkpoint_kwargs)], model=nn.Sequential(table), iter=0,
                             max_iters=max_iters, logger=Mock())
    hook = ShardedTableHook()
    hook.before_train(runner)
    gathered, saved = [], []
    for runner.iter in range(max_iters):
        hook.before_train_iter(runner, batch_idx=runner.iter)
        assert not hook.gathered  # forgotten once the saves it was gathered for are done
        hook.after_train_iter(runner, batch_idx=runner.iter)
        if hook.gathered:
            assert hook.gathered.keys() == {f'0.{column}' for column in COLUMNS}
            assert all(tensor.device.type == 'cpu' for tensor in hook.gathered.values())  # rank 0's host
            assert hook.gathered['0.weight'].shape == (11, 2)
            gathered.append(runner.iter + 1)
        if rank == 0 and hook.gathered:  # the save, on rank 0 only (Runner.save_checkpoint is master_only)
            for _ in range(2):  # a second save in the same phase (mmengine's re-save after a best one) too
                checkpoint = dict(state_dict=runner.model.state_dict())
                hook.before_save_checkpoint(runner, checkpoint)
                saved.append(checkpoint['state_dict']['0.last_step'].tolist())
    hook.after_train(runner)
    assert not hook.gathered and not runner.logger.warning.called
    return gathered, saved


CHECKPOINT_SCHEDULES = [  # CheckpointHook's settings, and the iterations (1-based) after which it saves
    (dict(by_epoch=False, interval=3), [3, 6, 7]),  # every third iteration, and the last one (save_last)
    (dict(by_epoch=False, interval=3, save_last=False, save_begin=4), [4, 7]),
    (dict(by_epoch=True, interval=1), []),  # epoch-based saves gather after the epoch instead
]


def gathered_after_each_schedule(rank, world_size):
    return [gathered_after(rank, world_size, kwargs, 7) for kwargs, _ in CHECKPOINT_SCHEDULES]


def test_iteration_based_checkpoints_get_the_whole_table():
    rank_0, rank_1 = run_distributed(gathered_after_each_schedule, 2)
    for (_, expected), (gathered_0, saved_0), (gathered_1, saved_1) in zip(CHECKPOINT_SCHEDULES, rank_0, rank_1):
        assert gathered_0 == expected and gathered_1 == []  # only rank 0 keeps the gathered rows
        assert saved_0 == [[1] * 6 + [2] * 5] * 2 * len(expected) and saved_1 == []


def test_a_save_without_a_gather_holds_no_sharded_rows_and_warns():
    table = LazySGDRows(10, 2)
    table.world_size = 2  # as if sharded
    runner = SimpleNamespace(hooks=[], model=nn.Sequential(table), iter=4, logger=Mock())
    hook = ShardedTableHook()
    hook.before_train(runner)
    checkpoint = dict(state_dict=runner.model.state_dict())
    hook.before_save_checkpoint(runner, checkpoint)
    assert '0.weight' not in checkpoint['state_dict'] and '0.transitions' in checkpoint['state_dict']
    assert 'holds none of their rows' in runner.logger.warning.call_args.args[0]


def test_tables_that_are_not_sharded_are_left_alone(monkeypatch):
    monkeypatch.setattr(sharded_table_hook, 'gather_rows_to_rank0', Mock(side_effect=AssertionError('gathered')))
    runner = SimpleNamespace(hooks=[CheckpointHook(by_epoch=False, interval=1)], model=nn.Sequential(
        LazySGDRows(10, 2)), iter=0, max_iters=2, logger=Mock())
    hook = ShardedTableHook()
    hook.before_train(runner)
    hook.after_train_iter(runner, batch_idx=0)
    checkpoint = dict(state_dict=runner.model.state_dict())
    hook.before_save_checkpoint(runner, checkpoint)
    assert not hook.gathered and not runner.logger.warning.called


BEST_CASES = [  # CheckpointHook's save_best settings, the best scores so far, the metrics, and whether it saves
    (dict(save_best='acc', rule='greater'), {}, {'acc': 0.1}, True),  # nothing is best yet
    (dict(save_best='acc', rule='greater'), {'best_score': 0.5}, {'acc': 0.5}, False),  # a tie is no better
    (dict(save_best='acc', rule='greater'), {'best_score': 0.5}, {'acc': 0.6}, True),
    (dict(save_best='loss', rule='less'), {'best_score': 0.5}, {'loss': 0.6}, False),
    (dict(save_best='acc', rule='greater'), {'best_score': 0.5}, {}, False),  # a validation without metrics
    (dict(save_best='auto'), {}, {'acc': 0.1}, True),  # resolved at the first validation, which saves
    (dict(save_best=['top1', 'top5'], rule='greater'), {'best_score_top1': 0.5, 'best_score_top5': 0.9},
     {'top1': 0.4, 'top5': 0.95}, True),  # one of several keys improves
    (dict(save_best=['top1', 'top5'], rule='greater'), {'best_score_top1': 0.5, 'best_score_top5': 0.9},
     {'top1': 0.4, 'top5': 0.85}, False),
    (dict(interval=1), {}, {'acc': 0.1}, False),  # no save_best
]


@pytest.mark.parametrize('checkpoint_kwargs, best_scores, metrics, saves', BEST_CASES)
def test_saves_best_follows_checkpoint_hook(checkpoint_kwargs, best_scores, metrics, saves):
    message_hub = MessageHub(f'saves_best_{len(best_scores)}_{len(metrics)}')
    for key, score in best_scores.items():
        message_hub.update_info(key, score)
    assert saves_best(CheckpointHook(**checkpoint_kwargs), SimpleNamespace(message_hub=message_hub),
                      metrics) is saves


# ---- a real Runner on 2 gloo ranks -------------------------------------------------------------------------
NUM_IMAGES, IN_DIM, DIM, BATCH_SIZE = 13, 4, 6, 4  # shards of 7 and 6 rows; 7 images a rank: 2 steps an epoch
VAL_SCORES = (0.5, 0.4, 0.6, 0.6)  # each epoch's validation: a best checkpoint after epochs 1 and 3 only


class ShardedClassifier(BaseModel):
    """A Linear and a sharded instance classifier: the full classifier's layout, small."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(IN_DIM, DIM)
        self.head = InstanceClsHead(NUM_IMAGES, DIM, sharded=True)

    def forward(self, inputs, sample_idx=None, mode='tensor'):
        if mode == 'loss':
            return self.head.loss(self.backbone(inputs), sample_idx)
        return self.backbone(inputs)


class ScriptedScore(BaseMetric):
    """A validation metric that reports ``VAL_SCORES`` in turn, one a validation."""

    def __init__(self) -> None:
        super().__init__()
        self.validations = 0

    def process(self, data_batch, data_samples) -> None:
        self.results.append(0)

    def compute_metrics(self, results) -> dict:
        self.validations += 1
        return dict(score=VAL_SCORES[self.validations - 1])


class ShardRecorder(Hook):
    """This rank's rows when the run starts, when training starts, and after every epoch once CheckpointHook has
    saved (lower priority than every other hook), with the number of gathers so far."""

    priority = 'LOWEST'

    def __init__(self, gathers: list) -> None:
        self.gathers = gathers
        self.records = {}

    def _record(self, runner, when) -> None:
        rows = runner.model.module.head.rows
        self.records[when] = dict(columns={name: column.clone() for name, column in rows.columns().items()},
                                  num_gathers=len(self.gathers))

    def before_run(self, runner) -> None:
        self._record(runner, 'before_run')

    def before_train(self, runner) -> None:
        self._record(runner, 'before_train')

    def after_train_epoch(self, runner) -> None:
        self._record(runner, runner.epoch + 1)


def train_sharded(rank: int, world_size: int, work_dir: str):
    """Four epochs with a checkpoint every second one (and the last) and the best one after each validation;
    return what this rank recorded."""
    torch.manual_seed(0)
    gathers = []
    gather = sharded_table_hook.gather_rows_to_rank0

    def recording_gather(local, sizes, on_chunk=None):
        whole = gather(local, sizes, on_chunk)
        gathers.append(None if whole is None else (tuple(whole.shape), whole.device.type))
        return whole

    sharded_table_hook.gather_rows_to_rank0 = recording_gather
    generator = torch.Generator().manual_seed(1)
    dataset = [dict(inputs=torch.randn(IN_DIM, generator=generator), sample_idx=index) for index in range(NUM_IMAGES)]
    loader = dict(sampler=dict(type='DefaultSampler', shuffle=False), batch_size=BATCH_SIZE,
                  collate_fn=dict(type='default_collate'), num_workers=0)
    recorder = ShardRecorder(gathers)
    runner = Runner(
        model=ShardedClassifier(), work_dir=work_dir, launcher='pytorch', default_scope='mmpretrain',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        cfg=dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None)),
        train_dataloader=dict(dataset=dataset, **loader), val_dataloader=dict(dataset=dataset, **loader),
        val_evaluator=[ScriptedScore()], val_cfg=dict(),
        optim_wrapper=dict(type='OptimWrapper', constructor='LazyCorrectedSGDConstructor',
                           optimizer=dict(type='SGD', lr=0.5, momentum=0.9, weight_decay=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=1),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, save_best='score', rule='greater'),
                           logger=dict(type='LoggerHook')),
        custom_hooks=[ShardedTableHook(), recorder], log_level='WARNING')
    runner.train()
    return runner.model.module.head.rows.row_offset, recorder.records, gathers


@pytest.fixture(scope='module')
def sharded_run(tmp_path_factory):
    """What each of 2 gloo ranks recorded in one training run, and its work dir."""
    work_dir = tmp_path_factory.mktemp('sharded_run')
    return run_distributed(train_sharded, 2, str(work_dir)), work_dir


def test_two_ranks_save_the_concatenated_shards_and_gather_only_for_a_save(sharded_run):
    ((offset_0, records_0, gathers_0), (offset_1, records_1, gathers_1)), work_dir = sharded_run
    assert (offset_0, offset_1) == (0, 7)
    # a gather (one per column) after the validations of epochs 1 and 3 (a best score: the best checkpoint) and
    # after epochs 2 (interval=2) and 4 (save_last); none after validations that beat nothing
    for records in (records_0, records_1):  # recorded after each epoch's saves, before its validation
        assert [records[epoch]['num_gathers'] for epoch in (1, 2, 3, 4)] == [0, 6, 6, 12]
    whole = (NUM_IMAGES, )
    assert gathers_0 == [(whole + (DIM, ), 'cpu'), (whole + (DIM, ), 'cpu'), (whole, 'cpu')] * 4  # rank 0's host
    assert gathers_1 == [None] * 12  # rank 1 holds no copy
    # epoch_3.pth: mmengine saves the latest checkpoint again after a best one; best_score_epoch_1.pth was replaced
    saved = {'epoch_2.pth': 2, 'epoch_3.pth': 3, 'epoch_4.pth': 4, 'best_score_epoch_3.pth': 3}
    assert sorted(path.name for path in work_dir.glob('*.pth')) == sorted(saved)
    for name, epoch in saved.items():
        state = torch.load(work_dir / name, map_location='cpu', weights_only=False)['state_dict']
        for column in COLUMNS:  # every checkpoint holds the whole table, as it was after that epoch
            shards = [records_0[epoch]['columns'][column], records_1[epoch]['columns'][column]]
            assert torch.equal(state[f'head.rows.{column}'], torch.cat(shards)), (name, column)
        assert state['head.rows.transitions'].shape == (2 * epoch, 2, 2)
    # the rows moved between the saves: a later checkpoint is no stale copy of an earlier one
    assert not torch.equal(records_0[2]['columns']['weight'], records_0[3]['columns']['weight'])
    assert (records_1[4]['columns']['last_step'] == 8).all()


def test_the_runner_keeps_each_ranks_own_initial_rows(sharded_run):
    # mmengine broadcasts every state-dict entry from rank 0 when training starts: sharded rows stay out of it
    ((_, records_0, _), (_, records_1, _)), _ = sharded_run
    for records in (records_0, records_1):
        assert torch.equal(records['before_train']['columns']['weight'], records['before_run']['columns']['weight'])
    assert not torch.equal(records_0['before_train']['columns']['weight'],
                           records_1['before_train']['columns']['weight'])
