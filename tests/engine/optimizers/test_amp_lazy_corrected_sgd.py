"""AmpLazyCorrectedSGD: steps that the loss scaler skips (inf / NaN gradients) leave the lazily corrected rows equal
to dense SGD without those steps (issue "mixed precision that keeps the lazy rows").

mmengine's AmpOptimWrapper needs CUDA to be built; the tests pretend it is there while building the wrapper, then
give it a CPU ``torch.amp.GradScaler`` with a dynamic scale. Everything is float64 and no autocast runs (the
tests call ``register_rows`` and ``update_params`` as plain PyTorch code does, not ``optim_context``), so the
lazy rows must match the dense reference to rounding.
"""
import copy
import math
from typing import Dict, List, NamedTuple, Sequence

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim.optimizer import amp_optimizer_wrapper
from torch import Tensor, nn

from distributed import run_distributed
from pic_plugin.engine.optimizers import AmpLazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead

NUM_ROWS, DIM, IN_DIM, BATCH = 24, 6, 5, 4
NUM_STEPS, SKIPPED_STEPS = 12, (3, 7)
MOMENTUM, WEIGHT_DECAY, TEMPERATURE = 0.9, 0.05, 0.2
INITIAL_SCALE = 2.**10

pytestmark = pytest.mark.filterwarnings('ignore:`torch.cuda.amp.GradScaler:FutureWarning')


def learning_rate(step: int) -> float:
    """A schedule that changes every step: two steps of warm-up, then a cosine decay."""
    if step < 2:
        return 0.2 * (step + 1)
    return 0.05 + 0.3 * (1 + math.cos(math.pi * (step - 2) / (NUM_STEPS - 2)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:  # the 'instance_rows' group too
        group['lr'] = lr


def pretend_cuda(monkeypatch, available: bool) -> None:
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: available)
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: available)


def build_amp_wrapper(monkeypatch, network: nn.Module, **kwargs) -> AmpLazyCorrectedSGD:
    """The wrapper built as on a GPU, then given a dynamic CPU loss scaler."""
    with monkeypatch.context() as patch:
        pretend_cuda(patch, True)
        wrapper = AmpLazyCorrectedSGD(torch.optim.SGD(network.parameters(), lr=learning_rate(0), momentum=MOMENTUM,
                                                      weight_decay=WEIGHT_DECAY), **kwargs)
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=INITIAL_SCALE)
    return wrapper


class Problem(NamedTuple):
    inputs: List[Tensor]  # per step: (B, IN_DIM)
    sample_idx: List[Tensor]  # per step: (B,) distinct instances
    initial_rows: Tensor  # (N, D)
    network: nn.Module  # float64 Linear(IN_DIM, D), the initial weights of both runs


def make_problem(seed: int = 0) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(BATCH, IN_DIM, generator=generator, dtype=torch.float64) for _ in range(NUM_STEPS)]
    sample_idx = [torch.randperm(NUM_ROWS, generator=generator)[:BATCH] for _ in range(NUM_STEPS)]
    initial_rows = torch.randn(NUM_ROWS, DIM, generator=generator, dtype=torch.float64)
    torch.manual_seed(seed)
    return Problem(inputs, sample_idx, initial_rows, nn.Linear(IN_DIM, DIM).double())


def make_head(negatives: str, initial_rows: Tensor) -> InstanceClsHead:
    """An instance classifier of float64 rows: ``recent`` scores few of them per step, ``full`` all."""
    head = InstanceClsHead('auto', DIM, temperature=TEMPERATURE, negatives=negatives, num_negatives=6)
    head.rows_cfg['dtype'] = torch.float64
    head.allocate_rows(NUM_ROWS)
    head.rows.weight.copy_(initial_rows)
    return head


def put_inf(grad: Tensor) -> Tensor:
    grad = grad.clone()
    grad.view(-1)[1] = math.inf
    return grad


def run_amp(monkeypatch, problem: Problem, negatives: str, inf_in: str,
            skipped: Sequence[int] = SKIPPED_STEPS):
    """Train the head with AmpLazyCorrectedSGD, an inf put into a gradient at the ``skipped`` steps; check each.

    ``inf_in='network'`` puts it into the Linear's weight gradient, ``'rows'`` into the rows' leaf gradient only
    (the network's gradients stay finite: only the scaler's check of the rows can skip the step).
    """
    network = copy.deepcopy(problem.network)
    head = make_head(negatives, problem.initial_rows)
    wrapper = build_amp_wrapper(monkeypatch, network)
    wrapper.register_rows(head)
    rows = head.rows
    inject = [False]
    network_grad_finite = []

    def network_hook(grad: Tensor) -> Tensor:
        grad = put_inf(grad) if inject[0] and inf_in == 'network' else grad
        network_grad_finite.append(bool(torch.isfinite(grad).all()))
        return grad

    network.weight.register_hook(network_hook)
    scales, classes = [], []
    for step in range(NUM_STEPS):
        set_lr(wrapper.optimizer, learning_rate(step))
        scale = wrapper.loss_scaler.get_scale()
        rows.bring_all_forward()  # every row as of this step: what "no row moved" compares (PIC Eq. 3)
        columns = {name: column.clone() for name, column in rows.columns().items() if name != 'last_step'}
        params = [param.detach().clone() for param in network.parameters()]
        inject[0] = step in skipped
        loss = head.loss(network(problem.inputs[step]), problem.sample_idx[step])['loss']
        scored = rows.handed_out.local_indices
        classes.append(scored[scored >= 0].sort().values)  # the classes, without the slots that hold none
        if inject[0] and inf_in == 'rows':
            rows.handed_out.weight.register_hook(put_inf)
        wrapper.update_params(loss)

        assert rows.num_steps == step + 1 and rows.handed_out is None
        scales.append(wrapper.loss_scaler.get_scale())
        if step in skipped:
            assert scales[-1] == scale / 2
            rows.bring_all_forward()  # through the identity recorded for the skipped step
            for name, column in rows.columns().items():  # no row moved, not even those of this step
                if name != 'last_step':
                    assert torch.equal(column, columns[name]), name
            for param, before in zip(network.parameters(), params):  # nor the network
                assert torch.equal(param, before)
            assert network_grad_finite[-1] == (inf_in != 'network')  # 'rows': only the rows' check can skip
        else:
            assert scales[-1] == scale
            assert (rows.last_step[classes[-1]] == step + 1).all()
            assert not torch.equal(network.weight, params[0])
    return head, network, wrapper, scales, classes


def run_dense(problem: Problem, classes: Sequence[Tensor], skipped: Sequence[int] = SKIPPED_STEPS):
    """Plain float64 torch.optim.SGD over the whole table (zero gradients for the rows a step does not score) and
    the network, with the same losses; it does not step at the ``skipped`` steps."""
    network = copy.deepcopy(problem.network)
    table = nn.Parameter(problem.initial_rows.clone())  # (N, D)
    optimizer = torch.optim.SGD([table, *network.parameters()], lr=learning_rate(0), momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    for step in range(NUM_STEPS):
        set_lr(optimizer, learning_rate(step))
        features, sample_idx = network(problem.inputs[step]), problem.sample_idx[step]  # (B, D), (B,)
        scored = classes[step]  # (C,) sorted: the rows the step scores against
        logits = F.normalize(features, dim=1) @ F.normalize(table[scored], dim=1).t() / TEMPERATURE  # (B, C)
        F.cross_entropy(logits, torch.searchsorted(scored, sample_idx)).backward()
        if step not in skipped:
            optimizer.step()
        optimizer.zero_grad()
    return table.detach(), optimizer.state[table]['momentum_buffer'], network


def row_relative_error(rows: Tensor, reference: Tensor) -> Tensor:
    return (rows - reference).norm(dim=1) / reference.norm(dim=1)


@pytest.mark.parametrize('inf_in', ['network', 'rows'])
@pytest.mark.parametrize('negatives', ['recent', 'full'])
def test_skipped_steps_leave_the_lazy_rows_equal_to_dense_sgd_without_them(monkeypatch, negatives, inf_in) -> None:
    problem = make_problem()
    head, network, wrapper, scales, classes = run_amp(monkeypatch, problem, negatives, inf_in)
    rows = head.rows
    dense_rows, dense_momentum, dense_network = run_dense(problem, classes)

    expected_scales, scale = [], INITIAL_SCALE
    for step in range(NUM_STEPS):
        scale = scale / 2 if step in SKIPPED_STEPS else scale
        expected_scales.append(scale)
    assert scales == expected_scales  # halved at each skip, kept otherwise (no growth within 2000 steps)
    transitions = rows.state_dict()['transitions']  # (T, 2, 2): the identity at the skipped steps only
    identity = torch.eye(2, dtype=torch.float64)
    assert [bool(torch.equal(transition, identity)) for transition in transitions] == [
        step in SKIPPED_STEPS for step in range(NUM_STEPS)]
    if negatives == 'recent':  # rows that the last steps did not score are stale until brought forward
        assert all(len(scored) < NUM_ROWS for scored in classes)
        stale = rows.last_step < NUM_STEPS
        assert stale.sum() > NUM_ROWS // 4
        assert row_relative_error(rows.weight, dense_rows)[stale].min() > 1e-3

    rows.bring_all_forward()
    assert row_relative_error(rows.weight, dense_rows).max() < 1e-6
    assert row_relative_error(rows.momentum, dense_momentum).max() < 1e-6
    for param, dense_param in zip(network.parameters(), dense_network.parameters()):
        torch.testing.assert_close(param, dense_param, rtol=1e-6, atol=0)


def amp_rank_with_inf_on_rank_1(rank: int, world_size: int) -> Dict[str, Tensor]:
    """The same problem on both ranks, replicated rows; only rank 1's row gradients get the infs."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        head, network, _, scales, classes = run_amp(monkeypatch, make_problem(), 'recent',
                                                    'rows' if rank == 1 else 'nowhere')
    head.rows.bring_all_forward()
    return dict(rows=head.rows.weight, momentum=head.rows.momentum, scales=scales, classes=classes,
                network=[param.detach() for param in network.parameters()])


def test_an_inf_in_one_ranks_rows_makes_every_rank_skip_the_step() -> None:
    """A rank's row gradients are its own until the row update reduces them (DDP reduces the network's only), so
    the scaler's inf check is reduced over the ranks: rank 0, whose gradients stay finite, skips with rank 1 (run_amp
    checks it at every step), halves its scale alike, and both end where dense SGD without those steps does."""
    ranks = run_distributed(amp_rank_with_inf_on_rank_1, 2)
    assert ranks[0]['scales'] == ranks[1]['scales']
    for name in ('rows', 'momentum'):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    dense_rows, dense_momentum, _ = run_dense(make_problem(), ranks[0]['classes'])
    assert row_relative_error(ranks[0]['rows'], dense_rows).max() < 1e-6
    assert row_relative_error(ranks[0]['momentum'], dense_momentum).max() < 1e-6


def test_without_an_inf_the_scaled_steps_are_the_dense_steps(monkeypatch) -> None:
    """The gradients are unscaled before any update: a power-of-two scale changes no step (the control)."""
    problem = make_problem(seed=1)
    head, network, _, scales, classes = run_amp(monkeypatch, problem, 'recent', 'nowhere', skipped=())
    dense_rows, dense_momentum, dense_network = run_dense(problem, classes, skipped=())
    assert scales == [INITIAL_SCALE] * NUM_STEPS
    head.rows.bring_all_forward()
    assert row_relative_error(head.rows.weight, dense_rows).max() < 1e-12
    assert row_relative_error(head.rows.momentum, dense_momentum).max() < 1e-12
    for param, dense_param in zip(network.parameters(), dense_network.parameters()):
        torch.testing.assert_close(param, dense_param, rtol=1e-12, atol=0)


def test_the_state_holds_the_scale_and_refuses_the_old_transitions(monkeypatch) -> None:
    problem = make_problem()
    _, network, wrapper, scales, _ = run_amp(monkeypatch, problem, 'recent', 'rows')
    state = wrapper.state_dict()
    assert 'lazy_correction' not in state and state['param_groups'][-1]['name'] == 'instance_rows'
    resumed = build_amp_wrapper(monkeypatch, copy.deepcopy(network))
    resumed.load_state_dict(copy.deepcopy(state))
    assert resumed.loss_scaler.get_scale() == scales[-1] == INITIAL_SCALE / 4
    old_state = dict(copy.deepcopy(state), lazy_correction={'num_steps': 0, 'transitions': torch.zeros(0, 2, 2)})
    with pytest.raises(ValueError, match=r"holds 'lazy_correction'.*upgrade_checkpoint\.py OLD\.pth NEW\.pth"):
        resumed.load_state_dict(old_state)


def test_without_cuda_the_wrapper_says_to_train_in_bfloat16(monkeypatch) -> None:
    pretend_cuda(monkeypatch, False)
    with pytest.raises(RuntimeError, match=r"type='AmpOptimWrapper', or --amp.*needs a GPU.*"
                                           r'--cfg-options optim_wrapper\.dtype=bfloat16'):
        AmpLazyCorrectedSGD(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=MOMENTUM))


@pytest.mark.parametrize('settings, message', [
    (dict(accumulative_counts=2), 'accumulative_counts'),
    (dict(nesterov=True), 'nesterov'),
])
def test_unsupported_settings_are_refused_as_by_lazy_corrected_sgd(monkeypatch, settings: Dict, message: str):
    network = nn.Linear(2, 2)
    accumulative_counts = settings.pop('accumulative_counts', 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=MOMENTUM, **settings)
    pretend_cuda(monkeypatch, True)
    with pytest.raises(ValueError, match=message):
        AmpLazyCorrectedSGD(optimizer, accumulative_counts=accumulative_counts)
