"""The fused cosine soft-max cross-entropy against ``cosine_logits`` + ``sharded_cross_entropy``, and its kernels
compiled once for a run's steps, and anew for each CPU capability."""
import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import REPO_ROOT, cli_env
from pic_plugin.models.heads import InstanceClsHead
from pic_plugin.models.heads.instance_cls_head import EMPTY_COLUMN_LOGIT, cosine_logits
from pic_plugin.models.utils.distributed_softmax import sharded_cross_entropy
from pic_plugin.models.utils.fused_cosine_softmax import fused_cosine_cross_entropy


def test_the_fused_loss_and_gradients_equal_the_two_functions():
    """In float64, with empty columns, soft targets (one of them in another shard: -1) and two features that do not
    train the rows (multi-crop's detached views)."""
    generator = torch.Generator().manual_seed(0)
    num_trained, num_detached, num_classes, dim = 5, 2, 11, 6
    feats = torch.randn(num_trained + num_detached, dim, generator=generator, dtype=torch.float64)
    weight = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    offsets = torch.zeros(num_classes).index_fill_(0, torch.tensor([3, 8]), EMPTY_COLUMN_LOGIT)
    positions = torch.randint(0, num_classes, (len(feats), 3), generator=generator)
    positions[positions == 3], positions[positions == 8], positions[0, 2] = 4, 9, -1
    weights = torch.softmax(torch.randn(len(feats), 3, generator=generator, dtype=torch.float64), dim=1)
    results = []
    for fused in (True, False):
        leaf_feats, leaf_weight = feats.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        if fused:
            loss = fused_cosine_cross_entropy(leaf_feats, leaf_weight, 0.2, offsets, positions, weights, False,
                                              num_trained)
        else:
            logits = torch.cat([cosine_logits(leaf_feats[:num_trained], leaf_weight, 0.2, offsets.double()),
                                cosine_logits(leaf_feats[num_trained:], leaf_weight.detach(), 0.2, offsets.double())])
            loss = sharded_cross_entropy(logits, positions, weights, False, logit_bound=5.)
        loss.backward()
        results.append((loss.detach(), leaf_feats.grad, leaf_weight.grad))
    for fused, unfused, name in zip(*results, ('loss', 'feature gradient', 'row gradient')):
        torch.testing.assert_close(fused, unfused, rtol=0, atol=1e-12, msg=name)
    assert results[0][2][[3, 8]].abs().max() == 0  # the empty columns' rows get nothing
    assert results[0][1][num_trained:].abs().min() > 0  # the detached features are trained


def test_a_run_compiles_the_kernels_once():
    """Steps with recent negatives (C = K + B classes) and multi-crop views of two sizes reuse the kernels of the
    first step: no later step compiles a graph."""
    head = InstanceClsHead(40, 8, negatives='recent', num_negatives=12, fused=True)
    generator = torch.Generator().manual_seed(1)
    graphs = []
    for step in range(6):
        sample_idx = torch.randperm(40, generator=generator)[:4]
        feats = torch.randn(4, 8, generator=generator, requires_grad=True)
        num_small = 4 * (1 + step % 2)  # 4 or 8 detached views
        small = torch.randn(num_small, 8, generator=generator, requires_grad=True)
        loss = head.loss(feats, sample_idx, small, sample_idx.repeat(num_small // 4))['loss']
        loss.backward()
        head.rows.step(lr=0.5, momentum=0.9, weight_decay=1e-2)
        graphs.append(counters['stats']['unique_graphs'])
    assert graphs == [graphs[0]] * 6, graphs  # compiled in the first step only (dynamic shapes)


def test_the_fused_loss_needs_logits_within_the_unshifted_bound():
    with pytest.raises(ValueError, match=r'temperature >= 0.025; got temperature=0.02: raise model.head.temperature '
                                         r'or set model.head.fused=False'):
        InstanceClsHead(10, 4, temperature=0.02, fused=True)


# the fused forward's logits and sums against eager ones, in float64
KERNEL_CHECK = """
import torch
from pic_plugin.models.utils.fused_cosine_softmax import _logits_and_sums
generator = torch.Generator().manual_seed(0)
product = torch.randn(7, 37, dtype=torch.float64, generator=generator)
scales, offsets = torch.rand(37, dtype=torch.float64, generator=generator), torch.zeros(37, dtype=torch.float64)
logits, sums = _logits_and_sums(product, scales, offsets)
print(max((logits - product * scales).abs().max().item(), (sums - (product * scales).exp().sum(1)).abs().max().item()))
"""


@pytest.mark.skipif('ATEN_CPU_CAPABILITY' in os.environ, reason='runs a process under each capability itself')
def test_kernels_compiled_under_one_cpu_capability_are_not_reused_under_another(tmp_path):
    """Processes that share one compile cache, under this CPU's own capability and then each lower one (as the CI's
    passes run): every one computes the eager result. torch 2.14's cache does not key on ATEN_CPU_CAPABILITY, and
    reused the first kernel wrongly (logits off by 1.9 under avx2; a C++ compile error under default) until the
    vector width became an option of the compile."""
    lower = {'avx512': ['avx2', 'default'], 'avx2': ['default']}.get(torch.backends.cpu.get_cpu_capability().lower(),
                                                                     [])
    for capability in [None] + lower:
        env = cli_env(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / 'cache'))
        if capability is not None:
            env['ATEN_CPU_CAPABILITY'] = capability
        result = subprocess.run([sys.executable, '-c', KERNEL_CHECK], cwd=REPO_ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (capability, result.stderr[-3000:])
        assert float(result.stdout.split()[-1]) < 1e-12, (capability, result.stdout)
