"""NPID's memory-bank head: non-parametric softmax or NCE over a bank of one feature per training image."""
import math
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_dist_info
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from ..utils.distributed_softmax import at_least_float32
from ..utils.gather import all_gather_batch
from ..utils.host_state import HostStateMixin
from ..utils.row_storage import RowStorage, first_occurrences, to_device

LOSS_MODES = ('nce', 'softmax')


@MODELS.register_module()
class MemoryBankNCE(HostStateMixin, BaseModule):
    """Non-parametric instance discrimination with a memory bank (NPID, Wu et al. 2018, Sec. 3).

    Every training image ``i`` is its own class, represented not by a weight but by ``v_i``, a unit-norm
    running average of its own past features kept in a memory bank ``V`` (a :class:`RowStorage` of ``N x D``
    rows, initialised as random unit vectors, never back-propagated into). A projected feature is
    L2-normalised to ``f`` and compared with bank rows by ``v^T f / tau``.

    ``loss='softmax'`` is the exact non-parametric softmax over all ``N`` rows (Eq. 2-3):

    .. math::
        P(i|f) = \\frac{\\exp(v_i^T f / \\tau)}{\\sum_{j=1}^N \\exp(v_j^T f / \\tau)}, \\qquad
        L = -\\log P(i|f_i).

    ``loss='nce'`` is noise-contrastive estimation (Eq. 4-8): with ``m`` noise rows drawn uniformly
    (``P_n = 1/N``) for every positive,

    .. math::
        P(i|v) = \\frac{\\exp(v^T f_i / \\tau)}{Z}, \\quad
        h(i, v) = \\frac{P(i|v)}{P(i|v) + m P_n}, \\quad
        L = -\\log h(i, v_i) - \\sum_{k=1}^{m} \\log(1 - h(i, v_{j_k})),

    the sum over the ``m`` drawn noise rows being the Monte-Carlo estimate of ``m E_{P_n}[.]`` in Eq. 7. The
    normaliser is estimated once, from the noise of the first batch (Eq. 8,
    ``Z = N / m sum_k exp(v_{j_k}^T f / tau)``, averaged over the batch and over ranks), then held fixed; it is
    the buffer ``normaliser``, so checkpoints keep it. Whether it is estimated yet is known on the host (set when
    it is estimated or loaded), so no step reads it back to decide.

    ``proximal_weight = lambda > 0`` adds the proximal term of Eq. 9-10 to each positive,
    ``lambda ||f_i - v_i||^2`` with the bank row as ``v_i^(t-1)``, logged as ``loss_proximal``.

    After each loss the rows of the batch's images are updated as the reference implementation does,
    ``v_i <- normalise(m_bank v_i + (1 - m_bank) f_i)``. In distributed runs the features and indices of all
    ranks are gathered first, so every rank applies the same update and the banks stay identical; an image
    that appears more than once in the gathered batch is updated once, with its first feature in rank order.

    Noise indices are drawn where the bank lives (so they index it without a copy back from a GPU) by a
    ``torch.Generator`` of this head, re-seeded every step with ``noise_seed + step * world_size + rank``: ranks
    draw different noise, the draw does not touch (nor depend on) the global random state, and a resumed run
    draws what an uninterrupted one would, since the step count ``num_steps`` is checkpointed. It is a host
    tensor, not a buffer (``model.to`` does not move it, DistributedDataParallel does not broadcast it), saved
    under the key ``num_steps`` (see ``HostStateMixin``).

    ``num_classes='auto'`` builds the head without a bank; ``allocate_rows`` then creates it for the training
    set's size (``InstanceCountCheckHook`` calls it before the run loads or resumes a checkpoint).

    Example (plain PyTorch, one process)::

        head = MemoryBankNCE(num_classes=50000, in_channels=128, loss='nce', num_noise=4096)
        optim = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)   # the bank has no parameters
        loss = head.loss(model(images), sample_idx)['loss']   # (B, 128) projections, (B,) dataset indices
        loss.backward()
        optim.step()

    Args:
        num_classes (int | str): ``N``, the number of bank rows: the size of the training set, or ``'auto'`` for
            the bank to be allocated later by ``allocate_rows``.
        in_channels (int): ``D``, the length of the projected features and of each row. Defaults to 128
            (NPID Sec. 4.2, Table 4).
        loss (str): ``'nce'`` (Eq. 4-8) or ``'softmax'`` (Eq. 2, exact, for data sets small enough to compare
            every feature with all ``N`` rows each step). Defaults to 'nce'.
        num_noise (int): ``m``, noise rows per positive in the NCE mode; must be below ``num_classes``.
            Defaults to 4096 (NPID Sec. 4.2).
        temperature (float): ``tau``. Defaults to 0.07 (NPID Sec. 4.2).
        bank_momentum (float): ``m_bank`` in ``[0, 1)``, the weight of a row's old value in its update.
            Defaults to 0.5 (the reference implementation's ``nce-m``).
        proximal_weight (float): ``lambda`` of the proximal term (Eq. 9-10); 0 turns it off. Defaults to 0.
        noise_seed (int): Base seed of the noise draws. Defaults to 0.
        placement (str): ``'device'`` or ``'host'``: where the bank lives (see ``RowStorage``).
            Defaults to 'device'.
        init_cfg (dict, optional): Initialisation config of the module. Defaults to None.
    """

    host_state_names = ('num_steps', )

    def __init__(self,
                 num_classes: Union[int, str],
                 in_channels: int = 128,
                 loss: str = 'nce',
                 num_noise: int = 4096,
                 temperature: float = 0.07,
                 bank_momentum: float = 0.5,
                 proximal_weight: float = 0.,
                 noise_seed: int = 0,
                 placement: str = 'device',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if loss not in LOSS_MODES:
            raise ValueError(f'loss={loss!r} is not one of {LOSS_MODES}: use \'nce\' (NPID Eq. 4-8) or '
                             "'softmax' (the exact Eq. 2).")
        if loss == 'nce' and num_noise < 1:
            raise ValueError(f'num_noise={num_noise} must be positive (NPID uses 4096).')
        if not 0 <= bank_momentum < 1:
            raise ValueError(f'bank_momentum={bank_momentum} must lie in [0, 1) (NPID uses 0.5): at 1 the bank '
                             'would never learn the features.')
        if temperature <= 0:
            raise ValueError(f'temperature={temperature} must be positive (NPID uses 0.07).')
        if proximal_weight < 0:
            raise ValueError(f'proximal_weight={proximal_weight} must be >= 0 (0 turns the proximal term off).')
        self.loss_mode = loss
        self.num_noise = num_noise
        self.temperature = temperature
        self.bank_momentum = bank_momentum
        self.proximal_weight = proximal_weight
        self.noise_seed = noise_seed
        self.bank_cfg = dict(dim=in_channels, placement=placement)
        self.num_classes: Optional[int] = None
        self.bank: Optional[RowStorage] = None
        # Z of Eq. 8; 0 until estimated from the first batch (_normaliser_known tells the host which).
        self.register_buffer('normaliser', torch.zeros((), dtype=torch.float64))
        self._normaliser_known = False
        self.num_steps = torch.zeros((), dtype=torch.long)  # on the host: it seeds the noise generator
        self._noise_generators: Dict[torch.device, torch.Generator] = {}
        if num_classes != 'auto':
            self.allocate_rows(num_classes)

    def allocate_rows(self, num_classes: int) -> None:
        """Create the bank: a random unit vector for each of the ``num_classes`` training images.

        Args:
            num_classes (int): The size of the training set.

        Raises:
            ValueError: If ``num_classes`` is not a positive int (``RowStorage`` checks it), or not above
                ``num_noise`` in the NCE mode.
        """
        bank = RowStorage(num_classes, init='unit', **self.bank_cfg)
        if self.loss_mode == 'nce' and self.num_noise >= num_classes:
            raise ValueError(f'num_noise={self.num_noise} must lie in [1, num_classes - 1 = {num_classes - 1}]: '
                             "lower model.head.num_noise for a small data set, or use loss='softmax', which "
                             'compares with all rows.')
        self.num_classes, self.bank = num_classes, bank

    @torch.compiler.disable  # data-dependent shapes (row gathers, unique, FIFO): eager under torch.compile
    def loss(self, feats: Tensor, sample_idx: Tensor) -> Dict[str, Tensor]:
        """The NPID loss of a batch, then the momentum update of the batch's bank rows.

        Args:
            feats (Tensor): ``(B, D)`` projected features (normalised here, NPID's L2-normalisation layer).
            sample_idx (Tensor): ``(B,)`` instance labels: the images' indices in the training set, on the host
                (``InstanceClassification`` gives them so; a GPU tensor is read back).

        Returns:
            dict[str, Tensor]: ``{'loss': ...}``, plus ``'loss_proximal'`` when ``proximal_weight > 0``.
        """
        if self.bank is None:
            raise RuntimeError("num_classes='auto' and no bank yet: InstanceCountCheckHook (in custom_hooks) "
                               'allocates it before training; outside the runner, call allocate_rows(N) first.')
        local_indices = self.bank.to_local(sample_idx)  # on the host; also checks the range
        self.bank.place_on(feats.device)
        features = F.normalize(feats, dim=1)  # (B, D), f_i
        positives = self.bank.gather(local_indices, feats.device)  # (B, D), v_i^(t-1): a copy, no grad
        if self.loss_mode == 'softmax':
            losses = dict(loss=self._softmax_loss(features, local_indices))
        else:
            losses = dict(loss=self._nce_loss(features, positives))
        if self.proximal_weight > 0:
            # Eq. 9: lambda ||v_i^(t) - v_i^(t-1)||^2 on each positive, averaged over the batch
            losses['loss_proximal'] = self.proximal_weight * (features - positives).pow(2).sum(dim=1).mean()
        self._update_bank(features.detach(), local_indices)
        self.num_steps += 1
        return losses

    def _softmax_loss(self, features: Tensor, local_indices: Tensor) -> Tensor:
        """Eq. 2-3: cross-entropy of ``v_j^T f / tau`` over all ``N`` bank rows."""
        all_rows = self.bank.gather(torch.arange(self.num_classes, device=self.bank.device), features.device)
        logits = at_least_float32(features @ all_rows.t()) / self.temperature  # (B, D) x (D, N) -> (B, N)
        return F.cross_entropy(logits, to_device(local_indices, features.device))

    def _nce_loss(self, features: Tensor, positives: Tensor) -> Tensor:
        """Eq. 4-7 with the positive row and ``m`` uniformly drawn noise rows per feature."""
        batch_size, dim = features.shape
        noise_indices = self._draw_noise(batch_size, self.bank.device)  # (B, m), where the bank lives
        noise_rows = self.bank.gather(noise_indices.flatten(), features.device).view(batch_size, -1, dim)
        # float32 logits also under autocast (the bmm may run in bfloat16 / float16): the softplus terms sum m of them
        positive_logits = at_least_float32((positives * features).sum(dim=1)) / self.temperature  # (B,)
        noise_products = torch.bmm(noise_rows, features.unsqueeze(2)).squeeze(2)  # (B, m)
        noise_logits = at_least_float32(noise_products) / self.temperature
        if not self._normaliser_known:
            self._estimate_normaliser(noise_logits.detach())
        log_normaliser = torch.log(self.normaliser).to(noise_logits.dtype)
        log_noise_odds = math.log(self.num_noise / self.num_classes)  # log(m P_n)
        # With log P = logit - log Z (Eq. 4): -log h = softplus(log(m P_n) - log P) and
        # -log(1 - h) = softplus(log P - log(m P_n)) (Eq. 6), written so that no exp overflows.
        positive_term = F.softplus(log_noise_odds - (positive_logits - log_normaliser))  # (B,)
        noise_term = F.softplus(noise_logits - log_normaliser - log_noise_odds).sum(dim=1)  # (B,)
        return (positive_term + noise_term).mean()  # Eq. 7

    @torch.no_grad()
    def _estimate_normaliser(self, noise_logits: Tensor) -> None:
        """Eq. 8: ``Z = N / m sum_k exp(v_{j_k}^T f / tau)``, averaged over the batch and over ranks."""
        estimate = self.num_classes * noise_logits.double().exp().mean()
        _, world_size = get_dist_info()
        if world_size > 1:
            all_reduce(estimate, op='mean')
        self.normaliser.copy_(estimate)
        self._normaliser_known = True

    def _draw_noise(self, batch_size: int, device: torch.device) -> Tensor:
        """``(B, m)`` indices on ``device`` drawn uniformly from ``[0, N)`` by this head's generator of that device
        (see the class doc)."""
        rank, world_size = get_dist_info()
        generator = self._noise_generators.get(device)
        if generator is None:
            generator = self._noise_generators[device] = torch.Generator(device=device)
        generator.manual_seed(self.noise_seed + int(self.num_steps) * world_size + rank)
        return torch.randint(self.num_classes, (batch_size, self.num_noise), generator=generator, device=device)

    @torch.no_grad()
    def _update_bank(self, features: Tensor, local_indices: Tensor) -> None:
        """``v_i <- normalise(m_bank v_i + (1 - m_bank) f_i)`` for every image of the batch of all ranks."""
        features, local_indices = all_gather_batch(features, local_indices)  # (G, D), (G,) on the host
        unique_indices, first = first_occurrences(local_indices)  # (U,), (U,)
        old_rows = self.bank.gather(unique_indices, features.device)  # (U, D)
        new_rows = (self.bank_momentum * old_rows
                    + (1 - self.bank_momentum) * features[to_device(first, features.device)])  # (U, D)
        self.bank.write(unique_indices, weight=F.normalize(new_rows, dim=1))

    def host_state_hint(self, name: str) -> str:
        return 'it is not a single step count: the checkpoint is damaged.'

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + 'normaliser' in state_dict:  # read once here, at load time
            self._normaliser_known = bool(state_dict[prefix + 'normaliser'] > 0)
