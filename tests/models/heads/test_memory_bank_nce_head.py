import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from distributed import run_distributed
from float_bounds import assert_within, cosine_logit_error, cosine_softmax_gradient_bound, cross_entropy_error, gamma
from pic_plugin.engine.optimizers import LazyCorrectedSGD
from pic_plugin.models.heads import MemoryBankNCE
from pic_plugin.models.utils import LazySGDRows, RowStorage


def normaliser_rtol(dim, temperature, num_noise, batch_size):
    """Relative float32 error of Z (Eq. 8): each ``exp`` inherits its logit's error, then a sum and a mean."""
    return math.expm1(cosine_logit_error(dim, temperature)) + gamma(num_noise + batch_size + 4)


def nce_loss_error(dim, temperature, num_noise, batch_size, loss, z_rtol=0.0):
    """Absolute float32 error of the NCE loss (Eq. 7).

    ``-log h`` and ``-log(1 - h)`` change by at most the change of ``log P`` (their derivatives in ``log P`` lie in
    [-1, 1]), and ``log P`` errs by the logit's error plus Z's relative error; the 1 + m terms per sample and the
    batch mean add their own roundings.
    """
    log_p_error = cosine_logit_error(dim, temperature) + z_rtol + gamma(4)
    return (num_noise + 1) * log_p_error + gamma(num_noise + batch_size + 4) * abs(loss)


def bank_update_bound(previous, feature, momentum):
    """float32 error bound of ``normalize(m v + (1 - m) normalize(f))``, with its float64 value.

    Normalising ``f`` errs by ``gamma_{D+2}`` per unit-size element, the average by 3 more roundings of terms of
    size at most 1; the second normalisation divides those errors by the average's norm and adds its own.
    """
    previous, feature = previous.double(), feature.double()
    average = momentum * previous + (1 - momentum) * F.normalize(feature, dim=-1)
    dim = average.shape[-1]
    bound = (gamma(dim + 2) + gamma(3)) / average.norm(dim=-1, keepdim=True) + gamma(dim + 2)
    return F.normalize(average, dim=-1), bound


def fixed_noise(head, noise):
    """Make ``head`` draw ``noise`` ((B, m) indices) in its next step, and return the list of draws."""
    draws = []

    def draw(batch_size, device):
        draws.append(noise)
        return noise

    head._draw_noise = draw
    return draws


def nce_loss_float64(feats, bank, sample_idx, noise, normaliser, temperature):
    """NPID Eq. 4-7 written out in float64 with the given noise indices (B, m) and normaliser Z."""
    num_rows, num_noise = bank.shape[0], noise.shape[1]
    f = F.normalize(feats.double(), dim=1)
    v = bank.double()
    p_positive = torch.exp((v[sample_idx] * f).sum(1) / temperature) / normaliser  # Eq. 4, (B,)
    p_noise = torch.exp(torch.einsum('bkd,bd->bk', v[noise], f) / temperature) / normaliser  # (B, m)
    noise_mass = num_noise / num_rows  # m P_n
    h_positive = p_positive / (p_positive + noise_mass)  # Eq. 6
    h_noise = p_noise / (p_noise + noise_mass)
    return (-torch.log(h_positive) - torch.log(1 - h_noise).sum(1)).mean()  # Eq. 7


def monte_carlo_normaliser(feats, bank, noise, temperature):
    """NPID Eq. 8: Z = N / m sum_k exp(v_jk^T f / tau), averaged over the batch."""
    f = F.normalize(feats.double(), dim=1)
    similarity = torch.einsum('bkd,bd->bk', bank.double()[noise], f)
    return bank.shape[0] / noise.shape[1] * torch.exp(similarity / temperature).sum(1).mean()


def test_softmax_loss_and_gradient_match_eq2_in_float64():
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=50, in_channels=8, loss='softmax', temperature=0.07)
    bank = head.bank.weight.clone()
    feats = torch.randn(6, 8, requires_grad=True)
    sample_idx = torch.tensor([3, 49, 0, 7, 7, 21])
    loss = head.loss(feats, sample_idx)['loss']
    reference_feats = feats.detach().double().requires_grad_(True)
    logits = F.normalize(reference_feats, dim=1) @ bank.double().t() / 0.07
    reference = -torch.log_softmax(logits, dim=1)[torch.arange(6), sample_idx].mean()
    logit_error = cosine_logit_error(8, 0.07)
    assert_within(loss.detach(), reference.detach(), cross_entropy_error(logit_error, 50, 6, reference.item()), 'loss')
    loss.backward()
    reference.backward()
    with torch.no_grad():
        coefficients = (logits.softmax(dim=1) + F.one_hot(sample_idx, 50)) / 6  # (B, N) >= |dL/dlogits|
        bound = cosine_softmax_gradient_bound(reference_feats, bank, coefficients, 0.07, logit_error)
    assert_within(feats.grad, reference_feats.grad, bound, 'feature gradient')


def test_nce_loss_matches_eq4_to_8_with_fixed_noise():
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=40, in_channels=8, loss='nce', num_noise=5, temperature=0.07)
    bank = head.bank.weight.clone()
    feats, sample_idx = torch.randn(4, 8), torch.tensor([0, 5, 17, 39])
    noise = torch.randint(0, 40, (4, 5))
    fixed_noise(head, noise)
    loss = head.loss(feats, sample_idx)['loss']
    normaliser = monte_carlo_normaliser(feats, bank, noise, 0.07)
    rtol = normaliser_rtol(8, 0.07, num_noise=5, batch_size=4)
    assert head.normaliser.item() == pytest.approx(normaliser.item(), rel=rtol)
    reference = nce_loss_float64(feats, bank, sample_idx, noise, normaliser, 0.07).item()
    assert abs(loss.item() - reference) <= nce_loss_error(8, 0.07, 5, 4, reference, z_rtol=rtol)


def test_normaliser_is_fixed_after_the_first_batch_and_restored_from_the_state_dict():
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5)
    assert head.normaliser.item() == 0  # not yet estimated
    head.loss(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))
    first = head.normaliser.item()
    assert first > 0
    bank = head.bank.weight.clone()
    feats, sample_idx, noise = 3 * torch.randn(4, 8), torch.tensor([4, 5, 6, 7]), torch.randint(0, 40, (4, 5))
    fixed_noise(head, noise)
    loss = head.loss(feats, sample_idx)['loss']
    assert head.normaliser.item() == first
    reference = nce_loss_float64(feats, bank, sample_idx, noise, torch.tensor(first, dtype=torch.float64), 0.07)
    assert abs(loss.item() - reference.item()) <= nce_loss_error(8, 0.07, 5, 4, reference.item())  # Z is the same

    restored = MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5)
    restored.load_state_dict(head.state_dict())
    assert restored.normaliser.item() == first
    restored.loss(torch.randn(4, 8), torch.tensor([8, 9, 10, 11]))
    assert restored.normaliser.item() == first


@pytest.mark.parametrize('bank_momentum', [0.5, 0.0, 0.9])
def test_bank_update_is_the_normalised_momentum_average_and_first_duplicate_wins(bank_momentum):
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=30, in_channels=6, loss='softmax', bank_momentum=bank_momentum)
    before = head.bank.weight.clone()
    feats = torch.randn(5, 6)
    sample_idx = torch.tensor([4, 9, 4, 0, 29])  # image 4 twice: its first feature is used
    head.loss(feats, sample_idx)
    for position in (0, 1, 3, 4):
        row = sample_idx[position]
        expected, bound = bank_update_bound(before[row], feats[position], bank_momentum)
        assert_within(head.bank.weight[row], expected, bound, f'row {int(row)}')
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[sample_idx] = False
    assert torch.equal(head.bank.weight[untouched], before[untouched])


def test_the_bank_is_row_storage_without_sgd_state_and_the_checkpoint_keeps_it_with_z_and_the_step():
    head = MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5)
    assert isinstance(head.bank, RowStorage) and not isinstance(head.bank, LazySGDRows)
    assert list(head.bank.columns()) == ['weight']
    wrapper = LazyCorrectedSGD(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9))
    wrapper.register_rows(head)
    assert wrapper.row_sets == []  # the bank is updated by the head itself, not by SGD
    assert set(head.state_dict()) == {'bank.weight', 'normaliser', 'num_steps'}


def test_bank_rows_stay_unit_norm_and_receive_no_gradient():
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=64, in_channels=8, num_noise=16, proximal_weight=30.)
    assert list(head.parameters()) == []  # the bank is no parameter: plain OptimWrapper / SGD suffice
    assert torch.allclose(head.bank.weight.norm(dim=1), torch.ones(64), atol=gamma(8 + 3))  # a normalised row
    for _ in range(5):
        feats = (10 * torch.randn(16, 8)).requires_grad_(True)
        losses = head.loss(feats, torch.randint(0, 64, (16, )))
        sum(losses.values()).backward()
        assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert not head.bank.weight.requires_grad and head.bank.weight.grad is None
    assert torch.allclose(head.bank.weight.norm(dim=1), torch.ones(64), atol=gamma(8 + 3))  # a normalised row


@pytest.mark.parametrize('loss_mode', ['nce', 'softmax'])
def test_proximal_term_is_lambda_times_squared_distance_to_the_bank_row(loss_mode):
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=30, in_channels=6, loss=loss_mode, num_noise=4, proximal_weight=40.)
    bank = head.bank.weight.clone()
    feats, sample_idx = torch.randn(3, 6), torch.tensor([2, 11, 20])
    losses = head.loss(feats, sample_idx)
    difference = F.normalize(feats.double(), dim=1) - bank[sample_idx].double()  # (B, D)
    expected = 40. * difference.pow(2).sum(1).mean().item()  # Eq. 9
    # each difference of unit-size elements errs by gamma_{D+4}; squaring doubles that relative to |difference|
    bound = 40. * (2 * difference.abs() * gamma(6 + 4)).sum(1).mean().item() + gamma(6 + 3 + 4) * expected
    assert abs(losses['loss_proximal'].item() - expected) <= bound
    assert 'loss_proximal' not in MemoryBankNCE(num_classes=30, in_channels=6, num_noise=4).loss(feats, sample_idx)


def test_resume_from_the_state_dict_gives_the_same_next_loss_and_bank():
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=100, in_channels=8, num_noise=20)
    batches = [(torch.randn(8, 8), torch.randperm(100)[:8]) for _ in range(3)]
    for feats, sample_idx in batches[:2]:
        head.loss(feats, sample_idx)
    torch.manual_seed(123)  # a fresh process: other bank init, other global random state
    resumed = MemoryBankNCE(num_classes=100, in_channels=8, num_noise=20)
    resumed.load_state_dict(head.state_dict())
    assert resumed.num_steps.item() == 2
    feats, sample_idx = batches[2]
    assert resumed.loss(feats, sample_idx)['loss'].item() == head.loss(feats, sample_idx)['loss'].item()
    assert torch.equal(resumed.bank.weight, head.bank.weight)


def test_step_count_and_normaliser_round_trip_through_the_state_dict_and_the_step_count_stays_on_the_host():
    torch.manual_seed(0)
    head = MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5)
    for step in range(3):
        head.loss(torch.randn(4, 8), torch.arange(4) + 4 * step)
    state = head.state_dict()
    assert list(state) == ['normaliser', 'num_steps', 'bank.weight']  # as when both were buffers
    assert state['num_steps'].dtype == torch.long and state['num_steps'].shape == () and state['num_steps'] == 3
    assert state['normaliser'].dtype == torch.float64 and state['normaliser'].shape == () and state['normaliser'] > 0
    restored = MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5)
    restored.load_state_dict(state)
    assert restored.num_steps.item() == 3 and restored.normaliser.item() == state['normaliser'].item()
    assert torch.equal(restored._draw_noise(4, torch.device('cpu')), head._draw_noise(4, torch.device('cpu')))
    feats, sample_idx = torch.randn(4, 8), torch.arange(4)
    assert restored.loss(feats, sample_idx)['loss'].item() == head.loss(feats, sample_idx)['loss'].item()
    assert restored.normaliser.item() == state['normaliser'].item()  # loaded as estimated: not estimated again

    restored.load_state_dict(MemoryBankNCE(num_classes=40, in_channels=8, num_noise=5).state_dict())
    assert restored.num_steps.item() == 0 and restored.normaliser.item() == 0
    restored.loss(feats, sample_idx)
    assert restored.normaliser.item() > 0  # a checkpoint from before the first step: Z is estimated again
    result = restored.load_state_dict({k: v for k, v in state.items() if k != 'num_steps'}, strict=False)
    assert result.missing_keys == ['num_steps'] and result.unexpected_keys == []

    restored.to('meta')
    assert restored.normaliser.device.type == 'meta'
    assert restored.num_steps.device.type == 'cpu' and restored.num_steps.dtype == torch.long  # not moved
    assert restored.state_dict()['num_steps'].device.type == 'cpu'


def test_noise_is_uniform_per_step_and_independent_of_the_global_random_state():
    head = MemoryBankNCE(num_classes=1000, in_channels=4, num_noise=500)
    torch.manual_seed(1)
    first = head._draw_noise(4, torch.device('cpu'))
    global_state = torch.get_rng_state()
    torch.manual_seed(2)
    assert torch.equal(head._draw_noise(4, torch.device('cpu')), first)  # same step, same draw
    torch.manual_seed(1)
    head.num_steps += 1
    second = head._draw_noise(4, torch.device('cpu'))
    assert not torch.equal(second, first)  # another step, another draw
    assert torch.equal(torch.get_rng_state(), global_state)  # the draws leave the global generator alone
    counts = torch.bincount(torch.cat([first, second]).flatten(), minlength=1000)
    assert counts.sum() == 4000 and counts.max() < 20  # spread over the rows (mean 4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_noise=40), r'num_noise=40 must lie in \[1, num_classes - 1 = 39\].*loss=.softmax.'),
    (dict(loss='infonce'), r"loss='infonce' is not one of \('nce', 'softmax'\)"),
    (dict(bank_momentum=1.0), r'bank_momentum=1.0 must lie in \[0, 1\)'),
    (dict(bank_momentum=-0.1), r'bank_momentum=-0.1 must lie in \[0, 1\)'),
    (dict(temperature=0.), 'temperature=0.0 must be positive'),
    (dict(proximal_weight=-1.), 'proximal_weight=-1.0 must be >= 0'),
])
def test_bad_arguments_name_the_value_and_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryBankNCE(**{**dict(num_classes=40, in_channels=4, num_noise=8), **kwargs})


def test_softmax_mode_accepts_any_num_noise_and_a_bad_index_is_refused():
    head = MemoryBankNCE(num_classes=10, in_channels=4, loss='softmax')
    with pytest.raises(ValueError, match='sample_idx 10 is out of range for a table of 10 rows'):
        head.loss(torch.randn(1, 4), torch.tensor([10]))


def test_an_auto_sized_bank_checks_num_noise_when_it_gets_its_size():
    head = MemoryBankNCE(num_classes='auto', in_channels=4, num_noise=8)
    with pytest.raises(ValueError, match=r'num_noise=8 must lie in \[1, num_classes - 1 = 7\]: lower model.head'):
        head.allocate_rows(8)
    head.allocate_rows(9)
    assert head.bank.weight.shape == (9, 4)


# ---- two processes (gloo on the CPU) -----------------------------------------------------------------------
WORLD_SIZE = 2
RANK_BATCHES = {0: [3, 7, 11, 42], 1: [5, 7, 60]}  # image 7 on both ranks; rank 1's last batch is smaller


def rank_features(rank):
    return torch.randn(len(RANK_BATCHES[rank]), 8, generator=torch.Generator().manual_seed(100 + rank))


def run_one_distributed_step(rank, world_size):
    torch.manual_seed(0)  # the same bank on every rank, as the runner's seed does
    head = MemoryBankNCE(num_classes=64, in_channels=8, num_noise=16)
    initial_bank = head.bank.weight.clone()
    noise = []
    draw = head._draw_noise
    head._draw_noise = lambda *args: noise.append(draw(*args)) or noise[-1]
    size_exchanges = []  # all-gathers of one rank's row count
    all_gather = dist.all_gather

    def recording_all_gather(parts, tensor, group=None, **kwargs):
        if tensor.shape == (1, ) and tensor.dtype == torch.int64:
            size_exchanges.append(tensor.device)
        return all_gather(parts, tensor, group=group, **kwargs)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(dist, 'all_gather', recording_all_gather)
        loss = head.loss(rank_features(rank), torch.tensor(RANK_BATCHES[rank]))['loss']
    return dict(bank=head.bank.weight, initial_bank=initial_bank, noise=noise[0], loss=loss.detach(),
                normaliser=head.normaliser, size_exchanges=size_exchanges)


def test_two_ranks_keep_identical_banks_and_draw_different_noise():
    ranks = run_distributed(run_one_distributed_step, WORLD_SIZE)
    # the batch sizes are exchanged once, from the host labels (under NCCL through the host group): the features'
    # gather takes the same sizes instead of reading its own back from the device
    assert ranks[0]['size_exchanges'] == ranks[1]['size_exchanges'] == [torch.device('cpu')]
    assert torch.equal(ranks[0]['initial_bank'], ranks[1]['initial_bank'])
    assert torch.equal(ranks[0]['bank'], ranks[1]['bank'])
    assert ranks[0]['normaliser'].item() == ranks[1]['normaliser'].item() > 0
    assert not torch.equal(ranks[0]['noise'][:3], ranks[1]['noise'])
    assert not torch.equal(ranks[0]['loss'], ranks[1]['loss'])

    # Both ranks applied the update of the gathered batch, rank 0's feature of image 7 first.
    initial_bank, bank = ranks[0]['initial_bank'], ranks[0]['bank']
    for rank in range(WORLD_SIZE):
        for row, feature in zip(RANK_BATCHES[rank], rank_features(rank)):
            if rank == 1 and row == 7:
                continue
            expected, bound = bank_update_bound(initial_bank[row], feature, 0.5)
            assert_within(bank[row], expected, bound, f'row {row}')
    # Z is the mean of the two ranks' estimates of Eq. 8.
    per_rank = [monte_carlo_normaliser(rank_features(r), initial_bank, ranks[r]['noise'], 0.07) for r in range(2)]
    rtol = normaliser_rtol(8, 0.07, ranks[0]['noise'].shape[1], len(RANK_BATCHES[0])) + gamma(2)
    assert ranks[0]['normaliser'].item() == pytest.approx(sum(per_rank).item() / 2, rel=rtol)
    touched = sorted(set(RANK_BATCHES[0]) | set(RANK_BATCHES[1]))
    assert math.isclose(float((bank != initial_bank).any(dim=1).sum()), len(touched))
