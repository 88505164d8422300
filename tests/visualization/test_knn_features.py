"""KNNFeatureCollector keeps an evenly spaced subset of a KNNSplits data set from val_step outputs, once each."""
import numpy as np
import pytest
import torch
from mmpretrain.models import SelfSupDataPreprocessor
from mmpretrain.structures import DataSample

from pic_plugin.datasets import KNNSplits
from pic_plugin.visualization import KNNFeatureCollector, display_image, swaps_channels
from pic_plugin.visualization.knn_features import evenly_spaced


def test_evenly_spaced_indices_include_both_ends_and_never_repeat():
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert evenly_spaced(3, 10).tolist() == [0, 1, 2]
    assert evenly_spaced(5, 1).tolist() == [0]


def val_step_outputs(num_train: int, num_test: int, labelled: bool = True):
    """What InstanceClassification.val_step yields over a KNNSplits: one data sample per image, in order."""
    samples = []
    for split, count in (('train', num_train), ('test', num_test)):
        for local in range(count):
            sample = DataSample(metainfo=dict(knn_split=split, sample_idx=local))
            global_index = local + (num_train if split == 'test' else 0)
            sample.set_field(torch.full((4, ), float(global_index)), 'knn_feature')
            if labelled:
                sample.set_gt_label(global_index % 3)
            samples.append(sample)
    return samples


def test_the_collector_keeps_each_split_in_proportion_and_each_image_once():
    dataset = KNNSplits(train=list(range(30)), test=list(range(10)))
    collector = KNNFeatureCollector(dataset, max_points=20)
    assert collector.positions.tolist() == [*evenly_spaced(30, 15).tolist(), *(30 + evenly_spaced(10, 5)).tolist()]
    outputs = val_step_outputs(30, 10)
    collector.add(outputs[:25])
    collector.add(outputs[25:] + outputs[:3])  # the sampler pads the last batch with the first images again
    features = collector.gather()
    assert features.indices.tolist() == collector.positions.tolist()
    assert torch.equal(features.features[:, 0], features.indices.float())
    assert torch.equal(features.labels, features.indices % 3)
    assert torch.equal(features.is_test, features.indices >= 30)


def test_a_small_data_set_is_kept_whole_and_missing_labels_give_none():
    collector = KNNFeatureCollector(KNNSplits(train=list(range(6)), test=list(range(3))), max_points=2000)
    collector.add(val_step_outputs(6, 3, labelled=False))
    features = collector.gather()
    assert features.indices.tolist() == list(range(9)) and features.labels is None


def test_refusals_name_the_fix():
    with pytest.raises(ValueError, match=r"need a KNNSplits validation data set, got list"):
        KNNFeatureCollector(list(range(5)))
    collector = KNNFeatureCollector(KNNSplits(train=list(range(4)), test=list(range(2))))
    with pytest.raises(ValueError, match=r'need knn_feature and knn_split on every sample'):
        collector.add([DataSample(metainfo=dict(sample_idx=0))])
    with pytest.raises(ValueError, match=r'no kNN feature was collected'):
        collector.gather()


@pytest.mark.parametrize('bgr_to_rgb', [True, False])
def test_display_image_shows_what_the_model_sees_in_rgb(bgr_to_rgb):
    pipeline_image = torch.stack([torch.full((2, 3), value, dtype=torch.uint8) for value in (10, 20, 30)])  # (C, H, W)
    grey = torch.full((1, 2, 3), 50, dtype=torch.uint8)
    items = [dict(inputs=pipeline_image, data_samples=DataSample()), dict(inputs=grey, data_samples=DataSample())]
    dataset = KNNSplits(train=items[:1], test=items[1:])
    image = display_image(dataset, 0, bgr_to_rgb)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == ([30, 20, 10] if bgr_to_rgb else [10, 20, 30])
    assert display_image(dataset, 1, bgr_to_rgb).tolist() == np.full((2, 3, 3), 50).tolist()


def test_swaps_channels_reads_the_to_rgb_of_mmpretrain_data_preprocessors():
    assert swaps_channels(SelfSupDataPreprocessor(mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True))
    assert not swaps_channels(SelfSupDataPreprocessor(mean=[127.5] * 3, std=[127.5] * 3))
