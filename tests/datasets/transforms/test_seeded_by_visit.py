"""A training view is a function of its visit: the same under any loader workers, their persistence, ranks and
resumes; different for two visits of one image; and the caller's random state is left as it was."""
import pickle
import random

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import DATA_SAMPLERS, DATASETS

import pic_plugin  # noqa: F401  (registers the components)
from pic_plugin.datasets import VisitKey

init_default_scope('mmpretrain')
NUM_IMAGES = 48
VIEW = [dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.3, 1.0), backend='pillow'),
        dict(type='RandomApply', transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4)], prob=0.8)]
PIPELINE = [dict(type='LoadImageFromFile'),
            dict(type='SeededByVisit', transforms=[dict(type='MultiView', num_views=1, transforms=[VIEW])]),
            dict(type='PackInputs')]


@pytest.fixture(scope='module')
def dataset(digits_workspace):
    return DATASETS.build(dict(type='CustomDataset', data_root=str(digits_workspace / 'data' / 'digits'),
                               data_prefix='train', indices=NUM_IMAGES, pipeline=PIPELINE))


def view(dataset, key) -> torch.Tensor:
    return dataset[key]['inputs'][0]


def test_a_key_gives_one_view_and_other_visits_give_others(dataset):
    key = VisitKey(5, seed=0, epoch=1, position=3)
    assert torch.equal(view(dataset, key), view(dataset, pickle.loads(pickle.dumps(key))))
    assert dataset[key]['data_samples'].sample_idx == 5 and type(dataset[key]['data_samples'].sample_idx) is int
    others = [VisitKey(5, seed=0, epoch=2, position=3), VisitKey(5, seed=0, epoch=1, position=4),
              VisitKey(5, seed=1, epoch=1, position=3)]
    assert not any(torch.equal(view(dataset, key), view(dataset, other)) for other in others)


def test_the_callers_random_state_is_left_as_it_was(dataset):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    view(dataset, VisitKey(5, 0, 0, 0))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_a_plain_index_is_refused_with_the_sampler_to_set(dataset):
    with pytest.raises(TypeError, match=r"sample_idx=5.*train_dataloader\.sampler.*KeyedDefaultSampler"):
        dataset[5]


def epochs_of_views(dataset, sampler: dict, num_epochs: int, **loader) -> list:
    """The batches of ``num_epochs`` epochs through mmengine's loader build (its worker seeding included)."""
    config = dict(dataset=dataset, sampler=dict(sampler, seed=0), batch_size=16,
                  collate_fn=dict(type='default_collate'), **loader)
    dataloader = Runner.build_dataloader(config, seed=0)
    epochs = []
    for epoch in range(num_epochs):
        dataloader.sampler.set_epoch(epoch)
        epochs.append([(batch['inputs'][0], [s.sample_idx for s in batch['data_samples']]) for batch in dataloader])
    return epochs


@pytest.mark.parametrize('sampler', [dict(type='KeyedDefaultSampler', shuffle=True),
                                     dict(type='SlidingWindowSampler', window_size=32, stride=8)],
                         ids=['KeyedDefaultSampler', 'SlidingWindowSampler'])
def test_views_do_not_depend_on_the_workers_or_their_persistence(dataset, sampler):
    in_process = epochs_of_views(dataset, sampler, 2, num_workers=0)
    for loader in (dict(num_workers=2, persistent_workers=False), dict(num_workers=2, persistent_workers=True)):
        with_workers = epochs_of_views(dataset, sampler, 2, **loader)
        for epoch_a, epoch_b in zip(in_process, with_workers):
            for (images_a, labels_a), (images_b, labels_b) in zip(epoch_a, epoch_b):
                assert labels_a == labels_b and torch.equal(images_a, images_b)
    # a resumed run starts at epoch 1 with fresh workers and sees what the uninterrupted run saw in epoch 1
    resumed = Runner.build_dataloader(dict(dataset=dataset, sampler=dict(sampler, seed=0), batch_size=16,
                                           collate_fn=dict(type='default_collate'), num_workers=2,
                                           persistent_workers=True), seed=0)
    resumed.sampler.set_epoch(1)
    for (images_a, _), batch in zip(in_process[1], resumed):
        assert torch.equal(images_a, batch['inputs'][0])


def views_by_visit(dataset, sampler: dict, epoch: int) -> dict:
    """``(position, index) -> view`` over one epoch of one sampler."""
    built = DATA_SAMPLERS.build(dict(sampler, seed=0), default_args=dict(dataset=dataset))
    built.set_epoch(epoch)
    return {(key.position, int(key)): view(dataset, key) for key in built}


@pytest.mark.parametrize('sampler', [dict(type='KeyedDefaultSampler', shuffle=True),
                                     dict(type='SlidingWindowSampler', window_size=32, stride=8)],
                         ids=['KeyedDefaultSampler', 'SlidingWindowSampler'])
def test_one_image_gets_other_views_in_other_visits_and_the_same_views_on_one_and_two_ranks(
        dataset, sampler, monkeypatch):
    one_rank = views_by_visit(dataset, sampler, epoch=1)
    epoch_0 = views_by_visit(dataset, sampler, epoch=0)
    image = 7
    views = [v for (_, index), v in list(one_rank.items()) + list(epoch_0.items()) if index == image]
    assert len(views) >= 2
    assert all(not torch.equal(a, b) for i, a in enumerate(views) for b in views[i + 1:])  # every visit its own view
    two_ranks = {}
    for rank in (0, 1):
        monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda: (rank, 2))
        monkeypatch.setattr('pic_plugin.datasets.samplers.sliding_window_sampler.get_dist_info', lambda: (rank, 2))
        share = views_by_visit(dataset, sampler, epoch=1)
        assert all(position % 2 == rank for position, _ in share)
        two_ranks.update(share)
    assert two_ranks.keys() == one_rank.keys()  # 48 images: no padding on two ranks
    assert all(torch.equal(two_ranks[visit], one_rank[visit]) for visit in one_rank)
