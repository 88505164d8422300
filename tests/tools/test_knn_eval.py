"""tools/knn_eval.py loads a checkpoint and prints the weighted kNN that the config's validation computes."""
import argparse
import re
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

from conftest import REPO_ROOT, run_cli
from knn_eval import build_config
from pic_plugin.evaluation.metrics.weighted_knn import topk_accuracy, weighted_knn_classify

NPID_TINY_CONFIG = REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18-w16_1xb128-coslr-20e_digits.py'
OPTIONS = ['val_dataloader.dataset.train.indices=300', 'val_dataloader.num_workers=0']


def knn_top1_in_process(cfg: Config, state_dict: dict) -> float:
    """Extract features with the checkpoint's weights and vote as NPID Sec. 3.4 does, without the runner."""
    model = MODELS.build(cfg.model)
    model.load_state_dict(state_dict)
    model.eval()
    features, labels, splits = [], [], []
    for batch in Runner.build_dataloader(cfg.val_dataloader):
        for sample in model.val_step(batch):
            features.append(sample.knn_feature)
            labels.append(int(sample.gt_label))
            splits.append(sample.knn_split)
    features, labels = torch.stack(features), torch.tensor(labels)
    is_train = torch.tensor([split == 'train' for split in splits])
    scores = weighted_knn_classify(features[is_train], labels[is_train], features[~is_train], num_classes=10)
    return topk_accuracy(scores, labels[~is_train], topk=(1, ))[0]


def test_knn_eval_prints_the_accuracy_of_the_checkpoint_weights(digits_workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(digits_workspace)
    cfg = Config.fromfile(NPID_TINY_CONFIG)
    cfg.merge_from_dict({'val_dataloader.dataset.train.indices': 300, 'val_dataloader.num_workers': 0})
    init_default_scope('mmpretrain')
    torch.manual_seed(7)  # weights other than the runner's own seed-0 initialisation
    state_dict = MODELS.build(cfg.model).state_dict()
    checkpoint = tmp_path / 'random_init.pth'
    torch.save(dict(state_dict=state_dict, meta=dict()), checkpoint)
    expected = knn_top1_in_process(cfg, state_dict)

    # the training set is not needed for the evaluation: point it nowhere
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'knn_eval.py', NPID_TINY_CONFIG, checkpoint,
                      '--work-dir', tmp_path / 'eval', '--cfg-options', *OPTIONS,
                      f'train_dataloader.dataset.data_root={tmp_path / "no_training_set"}'], cwd=digits_workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = re.search(r'knn/top1: +(\d+\.\d+)%\n +knn/top5: +(\d+\.\d+)%', result.stdout)
    assert printed, result.stdout[-2000:]
    assert float(printed.group(1)) == pytest.approx(expected, abs=0.005)
    assert float(printed.group(2)) >= float(printed.group(1))
    # EvalProgressHook: the feature extraction's bar (300 references + 297 held-out images) and its summary
    assert re.search(r'\] 597/597, [\d.]+ task/s, elapsed: \d+s, ETA: +0s\n', result.stdout), result.stdout[-2000:]
    assert re.search(r'val pass: 597 images in [\d.]+ s', result.stdout), result.stdout[-2000:]


def test_a_config_without_knn_validation_is_refused(tmp_path):
    config = tmp_path / 'no_val.py'
    config.write_text(f"_base_ = ['{NPID_TINY_CONFIG}']\nval_dataloader = None\nval_evaluator = None\n")
    args = argparse.Namespace(config=str(config), checkpoint='x.pth', cfg_options=None, launcher='none',
                              work_dir=None)
    with pytest.raises(ValueError, match=r'has no val_dataloader, val_evaluator: add the weighted-kNN validation'):
        build_config(args)


def test_the_progress_hook_is_added_once(tmp_path):
    config = tmp_path / 'with_hook.py'
    config.write_text(f"_base_ = ['{NPID_TINY_CONFIG}']\ncustom_hooks = [dict(type='EvalProgressHook')]\n")
    for path in (NPID_TINY_CONFIG, config):
        args = argparse.Namespace(config=str(path), checkpoint='x.pth', cfg_options=None, launcher='none',
                                  work_dir=None)
        hooks = [hook['type'] for hook in build_config(args).custom_hooks]
        assert hooks.count('EvalProgressHook') == 1, hooks
