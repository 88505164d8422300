"""LazyCorrectedSGD with LazySGDRows against dense torch.optim.SGD (PIC Eq. 2-3, Sec. 2.3), TransitionProducts,
the bfloat16 autocast of LazyCorrectedSGD, LazyCorrectedSGDConstructor and the wrappers' refusals.

AmpLazyCorrectedSGD (loss scaling, skipped steps) is in test_amp_lazy_corrected_sgd.py.
"""
import copy
import io
import math
import random
from typing import List, NamedTuple, Optional, Sequence, Tuple

import pytest
import torch
from mmengine.dataset import default_collate
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper, build_optim_wrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from float_bounds import assert_within, gamma
from pic_plugin.engine.optimizers import AmpLazyCorrectedSGD, LazyCorrectedSGD
from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.utils import lazy_sgd_rows
from pic_plugin.models.utils.lazy_sgd_rows import LazySGDRows, TransitionProducts

NUM_ROWS, DIM = 300, 8
BASE_LR, MOMENTUM = 0.1, 0.9
WARMUP_STEPS = 100
CPU = torch.device('cpu')


# ---- TransitionProducts --------------------------------------------------------------------------------
def sequential_product(hyper_params: Sequence[Tuple[float, float, float]], start: int, end: int) -> Tensor:
    """``A_{end-1} ... A_start`` multiplied one step at a time in Python floats (PIC Eq. 3 per step)."""
    (p00, p01), (p10, p11) = (1.0, 0.0), (0.0, 1.0)
    for lr, momentum, weight_decay in hyper_params[start:end]:
        a00, a01, a10, a11 = 1 - lr * weight_decay, -lr * momentum, weight_decay, momentum
        p00, p01, p10, p11 = (a00 * p00 + a01 * p10, a00 * p01 + a01 * p11,
                              a10 * p00 + a11 * p10, a10 * p01 + a11 * p11)
    return torch.tensor([[p00, p01], [p10, p11]], dtype=torch.float64)


def test_products_match_sequential_products_while_steps_are_appended() -> None:
    rng = random.Random(0)
    products = TransitionProducts(initial_capacity=4)  # grows several times below
    hyper_params = []
    for _ in range(6):
        for _ in range(rng.randint(1, 90)):
            step = (rng.uniform(0, 1), rng.uniform(0, 0.99), rng.uniform(0, 0.1))
            hyper_params.append(step)
            products.append(*step)
        for end in (products.num_steps, rng.randint(0, products.num_steps)):
            starts = torch.tensor([rng.randint(0, end) for _ in range(40)] + [0, end, end])
            expected = torch.stack([sequential_product(hyper_params, int(s), end) for s in starts])
            torch.testing.assert_close(products.products(starts, end), expected, rtol=1e-12, atol=1e-15)


def test_products_stay_finite_and_exact_over_200k_steps() -> None:
    num_steps = 200_000
    products = TransitionProducts()
    hyper_params = [(0.15 * (1 + math.cos(math.pi * j / num_steps)), MOMENTUM, 1e-4) for j in range(num_steps)]
    for step in hyper_params:
        products.append(*step)
    starts = torch.tensor([0, 1, 123_457, num_steps - 1, num_steps])
    result = products.products(starts, num_steps)  # (5, 2, 2)
    assert torch.isfinite(result).all()
    for start, product in zip(starts.tolist(), result):
        expected = sequential_product(hyper_params, start, num_steps)
        torch.testing.assert_close(product, expected, rtol=1e-9, atol=0)
    assert result[0].abs().max() < 1e-6  # 200k steps of weight decay shrink an unvisited row to almost 0


def test_products_state_dict_round_trip() -> None:
    rng = random.Random(1)
    original = TransitionProducts(initial_capacity=2)
    for _ in range(37):
        original.append(rng.random(), 0.9, rng.random() * 0.01)
    restored = TransitionProducts()
    restored.load_state_dict(copy.deepcopy(original.state_dict()))
    for _ in range(50):  # both keep going; the restored one grows from its loaded size
        step = (rng.random(), 0.9, rng.random() * 0.01)
        original.append(*step)
        restored.append(*step)
    starts = torch.arange(original.num_steps + 1)
    assert restored.num_steps == original.num_steps == 87
    torch.testing.assert_close(restored.products(starts, 87), original.products(starts, 87), rtol=1e-14, atol=0)


def test_products_reject_ranges_outside_the_recorded_steps() -> None:
    products = TransitionProducts()
    products.append(0.1, 0.9, 1e-4)
    with pytest.raises(ValueError, match='end_step=2'):
        products.products(torch.tensor([0]), 2)
    with pytest.raises(ValueError, match='start steps'):
        products.products(torch.tensor([0, 1]), 0)


# ---- LazyCorrectedSGD: set-up shared by the tests ------------------------------------------------------
class Problem(NamedTuple):
    """The same training steps for the lazy run and its dense reference."""

    rows: List[Tensor]  # per step: (R,) sampled row indices
    row_grads: List[Tensor]  # per step: (R, D) loss gradient of those rows
    model_inputs: List[Tensor]  # per step: (2, 4) inputs of the tiny model
    initial_rows: Tensor  # (N, D)


def make_problem(num_steps: int, seed: int) -> Problem:
    """Rows visited with probability 0.3, 0.02 or 0.003 per step (gaps of hundreds of steps); 10 never."""
    generator = torch.Generator().manual_seed(seed)
    visit_probability = torch.tensor([0.3, 0.02, 0.003], dtype=torch.float64)[torch.arange(NUM_ROWS) % 3]
    visit_probability[:10] = 0
    rows = [torch.nonzero(torch.rand(NUM_ROWS, generator=generator, dtype=torch.float64) < visit_probability)
            .flatten() for _ in range(num_steps)]
    row_grads = [torch.randn(len(r), DIM, generator=generator, dtype=torch.float64) for r in rows]
    model_inputs = [torch.randn(2, 4, generator=generator, dtype=torch.float64) for _ in range(num_steps)]
    initial_rows = torch.randn(NUM_ROWS, DIM, generator=generator, dtype=torch.float64)
    return Problem(rows, row_grads, model_inputs, initial_rows)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 3).double()


def sgd(**settings) -> dict:
    """The config of PIC's SGD, with ``settings`` changed."""
    return dict(dict(type='SGD', lr=BASE_LR, momentum=MOMENTUM, weight_decay=1e-4), **settings)


def build_wrapper(model: nn.Module, optimizer: Optional[dict] = None, **config) -> LazyCorrectedSGD:
    """Build the wrapper through mmengine's builder, as the runner does (``optimizer`` defaults to ``sgd()``)."""
    config = dict(dict(type='LazyCorrectedSGD', optimizer=optimizer or sgd()), **config)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return build_optim_wrapper(model, config)


def make_rows(initial_rows: Tensor, wrapper: LazyCorrectedSGD) -> LazySGDRows:
    rows = LazySGDRows(NUM_ROWS, DIM, dtype=torch.float64)
    rows.weight.copy_(initial_rows)
    wrapper.register_rows(rows)
    return rows


def warmup_cosine(optimizer, num_steps: int) -> list:
    """Per-iteration linear warm-up from lr / 100, then cosine decay: PIC's schedule."""
    return [LinearLR(optimizer, start_factor=0.01, by_epoch=False, begin=0, end=WARMUP_STEPS),
            CosineAnnealingLR(optimizer, T_max=num_steps - WARMUP_STEPS, by_epoch=False, begin=WARMUP_STEPS,
                              end=num_steps)]


def run_lazy(problem: Problem, steps: range, model: nn.Module, wrapper: LazyCorrectedSGD, rows: LazySGDRows,
             schedulers: Sequence = ()) -> List[float]:
    """Train with LazyCorrectedSGD; return the rows' lr of every step."""
    row_lrs = []
    for step in steps:
        row_lrs.append(wrapper.rows_group['lr'])
        assert wrapper.optimizer.param_groups[0]['lr'] == row_lrs[-1]  # the schedulers drive both groups
        weight = rows.rows_for_step(problem.rows[step], CPU)  # (R, D)
        loss = (weight * problem.row_grads[step]).sum() + model(problem.model_inputs[step]).square().sum()
        wrapper.update_params(loss)
        for scheduler in schedulers:
            scheduler.step()
    return row_lrs


def run_dense(problem: Problem, weight_decay: float) -> Tuple[Tensor, Tensor, nn.Module, List[float]]:
    """torch.optim.SGD over the whole table (zero gradient for unsampled rows) and the same model."""
    num_steps = len(problem.rows)
    model = make_model()
    table = problem.initial_rows.clone().requires_grad_(True)  # (N, D)
    optimizer = torch.optim.SGD([table, *model.parameters()], lr=BASE_LR, momentum=MOMENTUM,
                                weight_decay=weight_decay)
    schedulers = warmup_cosine(optimizer, num_steps)
    lrs = []
    for step in range(num_steps):
        lrs.append(optimizer.param_groups[0]['lr'])
        model(problem.model_inputs[step]).square().sum().backward()
        table.grad = torch.zeros_like(table)
        table.grad[problem.rows[step]] = problem.row_grads[step]
        optimizer.step()
        optimizer.zero_grad()
        for scheduler in schedulers:
            scheduler.step()
    return table.detach(), optimizer.state[table]['momentum_buffer'], model, lrs


def row_relative_error(rows: Tensor, reference: Tensor) -> Tensor:
    """``(N, D), (N, D) -> (N,)`` distance of each row to its reference, relative to the reference's norm."""
    return (rows - reference).norm(dim=1) / reference.norm(dim=1)


def longest_gap(problem: Problem) -> int:
    last_visit = torch.zeros(NUM_ROWS, dtype=torch.long)
    gap = torch.zeros(NUM_ROWS, dtype=torch.long)
    for step, rows in enumerate(problem.rows):
        gap[rows] = torch.maximum(gap[rows], step - last_visit[rows])
        last_visit[rows] = step
    return int(gap.max())


# ---- LazyCorrectedSGD: the acceptance test -------------------------------------------------------------
@pytest.mark.parametrize('weight_decay', [1e-4, 0.05])
def test_lazy_rows_equal_dense_sgd_under_warmup_and_cosine(weight_decay: float) -> None:
    num_steps = 1000
    problem = make_problem(num_steps, seed=0)
    assert longest_gap(problem) >= 500
    model = make_model()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=weight_decay), correction=True)
    rows = make_rows(problem.initial_rows, wrapper)
    row_lrs = run_lazy(problem, range(num_steps), model, wrapper, rows, warmup_cosine(wrapper, num_steps))
    dense_rows, dense_momentum, dense_model, dense_lrs = run_dense(problem, weight_decay)

    assert row_lrs == dense_lrs
    assert row_lrs[0] == pytest.approx(BASE_LR / 100)
    assert max(row_lrs) == pytest.approx(BASE_LR) == row_lrs[WARMUP_STEPS]
    assert row_lrs[-1] < BASE_LR / 1000
    assert rows.num_steps == num_steps
    skipped = rows.last_step < num_steps
    assert skipped.sum() > NUM_ROWS // 2
    stale_error = row_relative_error(rows.weight, dense_rows)[skipped]
    assert stale_error.max() > 1e-3 if weight_decay > 1e-3 else stale_error.max() > 1e-5

    rows.bring_all_forward(chunk_size=64)
    assert (rows.last_step == num_steps).all()
    assert row_relative_error(rows.weight, dense_rows).max() < 1e-6
    assert row_relative_error(rows.momentum, dense_momentum).max() < 1e-6
    for lazy_param, dense_param in zip(model.parameters(), dense_model.parameters()):
        assert torch.equal(lazy_param, dense_param)  # the extra param group changes nothing for the model


# ---- LazyCorrectedSGD: ablation, resume, row update rule -----------------------------------------------
def test_without_correction_skipped_steps_apply_neither_decay_nor_momentum() -> None:
    num_steps, weight_decay = 300, 0.05
    problem = make_problem(num_steps, seed=1)
    model = make_model()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=weight_decay), correction=False)
    rows = make_rows(problem.initial_rows, wrapper)
    row_lrs = run_lazy(problem, range(num_steps), model, wrapper, rows, warmup_cosine(wrapper, num_steps))
    rows.bring_all_forward()  # identity without correction

    weight, momentum = problem.initial_rows.clone(), torch.zeros_like(problem.initial_rows)  # (N, D)
    for step, lr in enumerate(row_lrs):  # PIC Eq. 2 on the sampled rows only
        used = problem.rows[step]
        momentum[used] = MOMENTUM * momentum[used] + problem.row_grads[step] + weight_decay * weight[used]
        weight[used] -= lr * momentum[used]
    torch.testing.assert_close(rows.weight, weight, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(rows.momentum, momentum, rtol=1e-12, atol=1e-15)
    assert rows.num_steps == num_steps
    assert torch.equal(rows.state_dict()['transitions'], torch.eye(2, dtype=torch.float64).repeat(num_steps, 1, 1))
    dense_rows = run_dense(problem, weight_decay)[0]
    assert row_relative_error(rows.weight, dense_rows).max() > 0.05


def test_state_dict_round_trip_mid_run_continues_identically() -> None:
    num_steps, resume_step = 300, 150
    problem = make_problem(num_steps, seed=2)
    model = make_model()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=0.05))
    rows = make_rows(problem.initial_rows, wrapper)
    schedulers = warmup_cosine(wrapper, num_steps)
    run_lazy(problem, range(resume_step), model, wrapper, rows, schedulers)

    buffer = io.BytesIO()
    torch.save({'optimizer': wrapper.state_dict(), 'rows': rows.state_dict(), 'model': model.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    # the transitions travel with the model's rows, not with the optimiser
    assert checkpoint['rows'].keys() == {'weight', 'momentum', 'last_step', 'transitions'}
    transitions = checkpoint['rows']['transitions']
    assert transitions.shape == (resume_step, 2, 2) and transitions.dtype == torch.float64
    assert 'lazy_correction' not in checkpoint['optimizer']
    assert checkpoint['optimizer']['param_groups'][-1]['name'] == 'instance_rows'
    optimizer_keys = set(checkpoint['optimizer'])

    resumed_model = make_model(seed=1)
    resumed_model.load_state_dict(checkpoint['model'])
    resumed_wrapper = build_wrapper(resumed_model, optimizer=sgd(weight_decay=0.05))
    resumed_rows = make_rows(torch.zeros(NUM_ROWS, DIM, dtype=torch.float64), resumed_wrapper)
    resumed_schedulers = warmup_cosine(resumed_wrapper, num_steps)  # mmengine's runner: build, then resume
    resumed_rows.load_state_dict(checkpoint['rows'])
    resumed_wrapper.load_state_dict(checkpoint['optimizer'])
    for resumed_scheduler, scheduler in zip(resumed_schedulers, schedulers):
        resumed_scheduler.load_state_dict(scheduler.state_dict())

    assert set(checkpoint['optimizer']) == optimizer_keys  # load_state_dict left its argument alone
    assert resumed_rows.num_steps == resume_step
    assert resumed_wrapper.rows_group['lr'] == wrapper.rows_group['lr']
    lrs = run_lazy(problem, range(resume_step, num_steps), model, wrapper, rows, schedulers)
    resumed_lrs = run_lazy(problem, range(resume_step, num_steps), resumed_model, resumed_wrapper, resumed_rows,
                           resumed_schedulers)
    assert resumed_lrs == lrs
    rows.bring_all_forward()
    resumed_rows.bring_all_forward()
    torch.testing.assert_close(resumed_rows.weight, rows.weight, rtol=1e-12, atol=0)
    torch.testing.assert_close(resumed_rows.momentum, rows.momentum, rtol=1e-12, atol=0)
    for resumed_param, param in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(resumed_param, param, rtol=0, atol=0)


def test_bring_forward_follows_zero_gradient_sgd_and_keeps_the_rows_dtype() -> None:
    model = make_model()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=0.01))
    rows = LazySGDRows(6, DIM)  # float32
    wrapper.register_rows(rows)
    lrs = [0.01, 0.5, 0.2, 0.3, 0.05]
    for lr in lrs:  # steps that hand out no row still record their transition
        wrapper.rows_group['lr'] = lr
        wrapper.step()
    assert rows.num_steps == len(lrs)
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(6, DIM, generator=generator)  # (6, D) float32
    momentum = torch.randn(6, DIM, generator=generator)
    last_step = torch.tensor([0, 2, 5, 2, 4, 1])
    new_weight, new_momentum = rows.bring_forward(weight.clone(), momentum.clone(), last_step)  # updates in place

    assert new_weight.dtype == new_momentum.dtype == torch.float32
    expected_weight, expected_momentum = weight.double(), momentum.double()
    # The same recurrence on absolute values bounds the terms the float32 correction adds up,
    # |P_00 w| + |P_01 u| and |P_10 w| + |P_11 u| (a product of |A_j| bounds |A_{t-1} ... A_s|).
    weight_terms, momentum_terms = weight.double().abs(), momentum.double().abs()
    for row, start in enumerate(last_step.tolist()):
        for lr in lrs[start:]:  # PIC Eq. 2 with g = 0
            expected_momentum[row] = MOMENTUM * expected_momentum[row] + 0.01 * expected_weight[row]
            expected_weight[row] = expected_weight[row] - lr * expected_momentum[row]
            momentum_terms[row] = MOMENTUM * momentum_terms[row] + 0.01 * weight_terms[row]
            weight_terms[row] = weight_terms[row] + lr * momentum_terms[row]
    # float32: the products are rounded once, then multiplied and added (at most 3 roundings per term); the
    # float64 reference's own error (about 1e-16) takes one more gamma.
    assert_within(new_weight, expected_weight, gamma(5) * weight_terms, 'weight')
    assert_within(new_momentum, expected_momentum, gamma(5) * momentum_terms, 'momentum')
    assert torch.equal(new_weight[2], weight[2])  # written at the current step: unchanged


@pytest.mark.parametrize('table_world_size, expected_grad_factor', [(1, 2.0), (2, 1.0)])
def test_replicated_tables_average_row_gradients_over_ranks(monkeypatch, table_world_size: int,
                                                            expected_grad_factor: float) -> None:
    def all_reduce_with_a_rank_that_saw_three_times_the_gradient(tensor: Tensor, op: str) -> None:
        assert op == 'mean'
        tensor.mul_(2)  # mean of g and 3 g

    monkeypatch.setattr(lazy_sgd_rows, 'get_world_size', lambda: 2)
    monkeypatch.setattr(lazy_sgd_rows, 'all_reduce', all_reduce_with_a_rank_that_saw_three_times_the_gradient)
    model = make_model()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=0.0))
    initial_rows = torch.randn(NUM_ROWS, DIM, dtype=torch.float64)
    rows = make_rows(initial_rows, wrapper)
    rows.world_size = table_world_size  # a table sharded over 2 ranks gets its rows' own gradients
    used, grad = torch.tensor([3, 7]), torch.ones(2, DIM, dtype=torch.float64)
    (rows.rows_for_step(used, CPU) * grad).sum().backward()
    wrapper.step()
    torch.testing.assert_close(rows.weight[used], initial_rows[used] - BASE_LR * expected_grad_factor * grad)
    assert torch.equal(rows.last_step[used], torch.ones(2, dtype=torch.long))


def test_rows_gathered_but_unused_by_the_loss_still_take_their_step() -> None:
    model = make_model()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=0.1))
    initial_rows = torch.randn(NUM_ROWS, DIM, dtype=torch.float64)
    rows = make_rows(initial_rows, wrapper)
    used = torch.tensor([0, 5])
    rows.rows_for_step(used, CPU)  # no backward: the rows have no .grad
    wrapper.step()
    torch.testing.assert_close(rows.weight[used], initial_rows[used] * (1 - BASE_LR * 0.1))
    torch.testing.assert_close(rows.momentum[used], initial_rows[used] * 0.1)
    assert rows.handed_out is None


def test_register_rows_finds_every_row_set_of_a_module_once() -> None:
    model = make_model()
    wrapper = build_wrapper(model)
    head = InstanceClsHead(NUM_ROWS, DIM)
    container = nn.ModuleDict(dict(head=head, other=LazySGDRows(5, 2)))
    wrapper.register_rows(container)
    wrapper.register_rows(head)  # already known
    assert [id(rows) for rows in wrapper.row_sets] == [id(head.rows), id(container['other'])]


# ---- LazyCorrectedSGD: bfloat16 autocast ---------------------------------------------------------------
class LinearAndHead(nn.Module):
    """A float32 network (one Linear) and an instance classifier of 20 float32 rows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, DIM)
        self.head = InstanceClsHead(20, DIM, negatives='recent', num_negatives=4)


@pytest.mark.parametrize('dtype', ['bfloat16', torch.bfloat16])
def test_bfloat16_runs_the_forward_under_autocast_and_keeps_the_rows_float32(dtype) -> None:
    model = LinearAndHead()
    wrapper = build_wrapper(model, optimizer=sgd(weight_decay=0.01), dtype=dtype)
    rows = model.head.rows
    initial = {name: column.clone() for name, column in rows.columns().items()}
    inputs, sample_idx = torch.randn(6, 4), torch.tensor([1, 4, 5, 9, 12, 17])
    assert wrapper.row_sets == []  # found at the first optim_context, as in mmengine's train_step
    with wrapper.optim_context(model):
        features = model.linear(inputs)
        assert features.dtype == torch.bfloat16
        loss = model.head.loss(features, sample_idx)['loss']
    assert model.linear(inputs).dtype == torch.float32  # autocast only inside the context
    assert wrapper.row_sets == [rows]
    assert rows.handed_out.weight.dtype == torch.float32
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    wrapper.update_params(loss)

    assert rows.num_steps == 1
    assert rows.weight.dtype == rows.momentum.dtype == torch.float32
    assert rows.state_dict()['transitions'].dtype == torch.float64
    assert torch.equal(rows.last_step[sample_idx], torch.ones(6, dtype=torch.long))
    assert (rows.weight[sample_idx] != initial['weight'][sample_idx]).all(dim=1).all()
    assert (rows.momentum[sample_idx] != 0).all(dim=1).all()
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[sample_idx] = False
    assert torch.equal(rows.weight[untouched], initial['weight'][untouched])  # lazy: written when next used


def test_no_dtype_runs_the_forward_in_float32() -> None:
    model = LinearAndHead()
    wrapper = build_wrapper(model)
    with wrapper.optim_context(model):
        assert model.linear(torch.randn(2, 4)).dtype == torch.float32


def test_float16_is_refused_with_the_amp_wrapper_to_use() -> None:
    with pytest.raises(ValueError, match=r"dtype='float16'.*float16 needs loss scaling.*type='AmpOptimWrapper'"):
        build_wrapper(make_model(), dtype='float16')


# ---- LazyCorrectedSGDConstructor -----------------------------------------------------------------------
def build_with_constructor(model: nn.Module, wrapper_type: str, **config) -> OptimWrapper:
    config = dict(type=wrapper_type, constructor='LazyCorrectedSGDConstructor', optimizer=sgd(), **config)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return build_optim_wrapper(model, config)


def pretend_cuda(monkeypatch, available: bool) -> None:
    """Make torch and mmengine's AmpOptimWrapper believe that CUDA is there (or is not)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: available)
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: available)


def test_the_constructor_builds_lazy_corrected_sgd_for_optim_wrapper() -> None:
    wrapper = build_with_constructor(make_model(), 'OptimWrapper', correction=False, dtype='bfloat16')
    assert type(wrapper) is LazyCorrectedSGD
    assert wrapper.correction is False and wrapper.cast_dtype == torch.bfloat16
    assert [group.get('name') for group in wrapper.optimizer.param_groups] == [None, 'instance_rows']
    assert wrapper.rows_group['lr'] == BASE_LR and wrapper.rows_group['weight_decay'] == 1e-4


@pytest.mark.filterwarnings('ignore:`torch.cuda.amp.GradScaler:FutureWarning')  # mmengine's default scaler
def test_the_constructor_builds_the_amp_wrapper_for_amp_optim_wrapper(monkeypatch) -> None:
    with monkeypatch.context() as patch:
        pretend_cuda(patch, True)
        wrapper = build_with_constructor(make_model(), 'AmpOptimWrapper', dtype='bfloat16')
    assert type(wrapper) is AmpLazyCorrectedSGD
    assert wrapper.trains_instance_rows and wrapper.cast_dtype == torch.bfloat16
    assert wrapper.rows_group['momentum'] == MOMENTUM


def test_the_amp_wrapper_without_cuda_says_to_train_in_bfloat16(monkeypatch) -> None:
    pretend_cuda(monkeypatch, False)
    with pytest.raises(RuntimeError, match=r"needs a GPU.*drop --amp.*optim_wrapper\.dtype=bfloat16"):
        build_with_constructor(make_model(), 'AmpOptimWrapper')


# ---- InstanceClassification refuses a wrapper that does not train the rows ------------------------------
NUM_IMAGES = 10


def tiny_instance_classification() -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='InstanceClassification',
        data_preprocessor=dict(type='SelfSupDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                      norm_cfg=dict(type='GN', num_groups=4)),
        neck=dict(type='MoCoV2Neck', in_channels=64, hid_channels=32, out_channels=16),
        head=dict(type='InstanceClsHead', num_classes=NUM_IMAGES, in_channels=16)))


def data_batch(sample_idx: Sequence[int]) -> dict:
    """What the training loader gives the model: 16 x 16 images packed with their ``sample_idx``."""
    generator = torch.Generator().manual_seed(0)
    return default_collate([
        dict(inputs=torch.randint(0, 256, (3, 16, 16), generator=generator, dtype=torch.uint8),
             data_samples=DataSample(metainfo=dict(sample_idx=index))) for index in sample_idx])


def test_train_step_with_a_plain_optim_wrapper_names_the_constructor() -> None:
    model = tiny_instance_classification()
    plain = OptimWrapper(torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=MOMENTUM))
    with pytest.raises(TypeError, match=r"OptimWrapper, which does not train the instance rows of InstanceClsHead"
                                        r".*constructor='LazyCorrectedSGDConstructor'"):
        model.train_step(data_batch([0, 1]), plain)
    assert model.head.rows.num_steps == 0 and model.head.rows.handed_out is None  # refused before the forward


@pytest.mark.parametrize('dtype', [None, 'bfloat16'])
def test_train_step_with_the_constructors_wrapper_trains_the_rows(dtype) -> None:
    model = tiny_instance_classification()
    wrapper = build_with_constructor(model, 'OptimWrapper', dtype=dtype)
    rows = model.head.rows
    before = rows.weight.clone()
    for step, sample_idx in enumerate(([0, 3, 4], [1, 3, 8])):
        log_vars = model.train_step(data_batch(sample_idx), wrapper)
        assert torch.isfinite(log_vars['loss'])
        assert rows.num_steps == step + 1 and rows.handed_out is None
    assert wrapper.row_sets == [rows]
    assert rows.weight.dtype == torch.float32
    assert (rows.last_step == 2).all()  # negatives='full' scores every row in every step: all are updated
    assert not torch.equal(rows.weight, before)


# ---- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('config, message', [
    (dict(optimizer=dict(type='Adam', lr=0.1)), 'momentum'),
    (dict(optimizer=sgd(nesterov=True)), 'nesterov'),
    (dict(optimizer=sgd(dampening=0.1)), 'dampening'),
    (dict(optimizer=sgd(maximize=True)), 'maximize'),
    (dict(accumulative_counts=2), 'accumulative_counts'),
])
def test_unsupported_optimizer_settings_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_wrapper(make_model(), **config)


def test_rows_handed_out_and_never_stepped_name_lazy_corrected_sgd() -> None:
    rows = LazySGDRows(NUM_ROWS, DIM)
    rows.rows_for_step(torch.tensor([0, 1]), CPU)  # a loss, and no optimiser that steps the rows
    with pytest.raises(RuntimeError, match=r"never updated.*constructor='LazyCorrectedSGDConstructor'"):
        rows.rows_for_step(torch.tensor([0, 1]), CPU)


def test_rows_ahead_of_their_transitions_are_refused() -> None:
    wrapper = build_wrapper(make_model())
    rows = make_rows(torch.zeros(NUM_ROWS, DIM, dtype=torch.float64), wrapper)
    for _ in range(7):
        rows.rows_for_step(torch.tensor([4]), CPU)
        wrapper.step()
    state = rows.state_dict()
    state['transitions'] = state['transitions'][:3]  # a damaged checkpoint: rows of step 7, transitions of 3
    fresh = LazySGDRows(NUM_ROWS, DIM, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r'rows were last updated at step 6, but transitions holds only 3 '
                                           'steps: the checkpoint is damaged'):
        fresh.load_state_dict(state)
    fresh.last_step[4] = 7  # rows written by a run that made 7 steps, transitions not restored
    with pytest.raises(ValueError, match=r'start steps \[0, 7\] are not all in \[0, end_step=3\]'):
        fresh.rows_for_step(torch.tensor([3, 4]), CPU)


def test_rows_without_their_transitions_are_refused() -> None:
    state = LazySGDRows(NUM_ROWS, DIM).state_dict()
    del state['transitions']  # the model state of a checkpoint from before the transitions moved into it
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"transitions"'):
        LazySGDRows(NUM_ROWS, DIM).load_state_dict(state)


def test_an_optimiser_state_with_the_old_transitions_names_the_converter() -> None:
    model = make_model()
    wrapper = build_wrapper(model)
    old_state = wrapper.state_dict()
    old_state['lazy_correction'] = {'num_steps': 0, 'transitions': torch.zeros(0, 2, 2, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"holds 'lazy_correction'.*python tools/model_converters/"
                                         r'upgrade_checkpoint\.py OLD\.pth NEW\.pth'):
        wrapper.load_state_dict(old_state)


def test_an_optimiser_state_without_the_rows_group_is_refused() -> None:
    model = make_model()
    wrapper = build_wrapper(model)
    plain_state = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=MOMENTUM).state_dict()
    with pytest.raises(ValueError, match='parameter groups'):
        wrapper.load_state_dict(plain_state)
    assert wrapper.rows_group['lr'] == BASE_LR  # the wrapper kept its own state
