"""Tests of the weighted kNN classifier of NPID (Sec. 3.4) and of the ``WeightedKNN`` metric."""
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample

from float_bounds import UNIT_ROUNDOFF, cosine_logit_error, gamma
from pic_plugin.evaluation import WeightedKNN, top_classes, topk_accuracy, weighted_knn_classify

NUM_CLASSES = 9
DIM = 16


def vote_rtol(k: int, tau: float, dim: int = DIM) -> float:
    """Relative float32 error bound of one class's vote ``sum_i exp((s_i - s_max) / tau)``.

    A cosine similarity errs by at most ``e`` (``cosine_logit_error`` with tau = 1), so ``(s_i - s_max) / tau``
    by ``2 e / tau`` plus its own rounding (at most ``2 u / tau``, as ``|s_i - s_max| <= 2``); ``exp`` adds ``u``
    and the sum of at most ``k`` positive weights ``gamma_k``.
    """
    return (2 * cosine_logit_error(dim, 1.0) + 2 * UNIT_ROUNDOFF) / tau + gamma(k + 2)


def paper_votes(train_features, train_labels, test_features, num_classes, k, tau):
    """Sec. 3.4 in float64 with numpy, one test row at a time; a tie at the k-th place keeps the lower index.

    Returns the paper's w_c and the largest similarity s_max of every row.
    """
    train = train_features.double().numpy()
    test = test_features.double().numpy()
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    similarity = test @ train.T  # (N_test, N_train)
    votes = np.zeros((len(test), num_classes))
    for row, row_similarity in enumerate(similarity):
        neighbours = np.lexsort((np.arange(len(train)), -row_similarity))[:k]
        for neighbour in neighbours:
            votes[row, train_labels[neighbour]] += np.exp(row_similarity[neighbour] / tau)
    return votes, similarity.max(axis=1)


def random_problem(seed, num_train=300, num_test=40, dim=DIM, num_labels=7):
    """Unnormalised features and labels in [0, num_labels), num_labels < NUM_CLASSES."""
    generator = torch.Generator().manual_seed(seed)
    train_features = 3 * torch.randn(num_train, dim, generator=generator)
    train_labels = torch.randint(0, num_labels, (num_train,), generator=generator)
    test_features = torch.randn(num_test, dim, generator=generator)
    return train_features, train_labels, test_features


@pytest.mark.parametrize('k', [1, 7, 60, 200, 300, 1000])
@pytest.mark.parametrize('tau', [0.07, 0.5])
def test_votes_match_float64_paper_formula(k, tau):
    # k = 60 exceeds every class size (about 43), 1000 exceeds N_train and is clamped to 300.
    train_features, train_labels, test_features = random_problem(seed=k)
    votes = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=k,
                                  tau=tau, chunk_size=16)
    expected, max_similarity = paper_votes(train_features, train_labels, test_features, NUM_CLASSES,
                                           min(k, 300), tau)
    expected_scaled = expected / np.exp(max_similarity / tau)[:, None]  # the documented per-row factor
    np.testing.assert_allclose(votes.numpy(), expected_scaled, rtol=vote_rtol(min(k, 300), tau), atol=0)
    assert votes.dtype == torch.float32 and votes.shape == (40, NUM_CLASSES)
    # Labels 7 and 8 have no training sample: no votes.
    assert torch.all(votes[:, 7:] == 0)
    expected_ranking = np.argsort(-expected, axis=1, kind='stable')[:, :5]
    assert torch.equal(top_classes(votes, 5), torch.from_numpy(expected_ranking))


def test_k_at_least_n_train_uses_every_training_feature():
    train_features, train_labels, test_features = random_problem(seed=3, num_train=20)
    all_neighbours = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=20)
    clamped = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=10 ** 6)
    assert torch.equal(all_neighbours, clamped)
    fewer = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=19)
    assert not torch.equal(all_neighbours, fewer)


@pytest.mark.parametrize('chunk_size', [1, 7, 40, 1000])
def test_chunked_equals_unchunked(chunk_size):
    train_features, train_labels, test_features = random_problem(seed=5)
    whole = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=50,
                                  chunk_size=len(test_features))
    chunked = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=50,
                                    chunk_size=chunk_size)
    torch.testing.assert_close(chunked, whole, rtol=2 * vote_rtol(50, 0.07), atol=0)  # two float32 results
    assert torch.equal(top_classes(chunked, 5), top_classes(whole, 5))


def test_similarity_matrix_is_at_most_chunk_by_n_train(monkeypatch):
    import pic_plugin.evaluation.metrics.weighted_knn as weighted_knn_module
    shapes = []
    nearest_neighbours = weighted_knn_module.nearest_neighbours

    def recording_nearest_neighbours(similarity, num_neighbours):
        shapes.append(tuple(similarity.shape))
        return nearest_neighbours(similarity, num_neighbours)

    monkeypatch.setattr(weighted_knn_module, 'nearest_neighbours', recording_nearest_neighbours)
    train_features, train_labels, test_features = random_problem(seed=7)
    weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, chunk_size=16)
    assert shapes == [(16, 300), (16, 300), (8, 300)]


def test_features_are_normalised_inside():
    train_features, train_labels, test_features = random_problem(seed=6)
    scales = torch.rand(len(train_features), 1) * 10 + 0.1
    votes = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES)
    rescaled = weighted_knn_classify(train_features * scales, train_labels, 5 * test_features, NUM_CLASSES)
    torch.testing.assert_close(rescaled, votes, rtol=2 * vote_rtol(200, 0.07), atol=0)  # two float32 results


def test_tie_at_kth_similarity_keeps_lower_training_index():
    basis = torch.eye(4)
    # Rows 1, 2 and 3 are the same feature as the test row (similarity 1), with labels 5, 3 and 2.
    train_features = torch.stack([basis[1], basis[0], basis[0], basis[0], basis[2]])
    train_labels = torch.tensor([0, 5, 3, 2, 1])
    test_features = basis[:1]
    one_neighbour = weighted_knn_classify(train_features, train_labels, test_features, 6, k=1)
    assert one_neighbour.nonzero().tolist() == [[0, 5]]
    two_neighbours = weighted_knn_classify(train_features, train_labels, test_features, 6, k=2)
    assert two_neighbours.nonzero().tolist() == [[0, 3], [0, 5]]
    assert two_neighbours[0, 3] == two_neighbours[0, 5] == 1.0
    # Reversing the order of the tied rows changes which label is kept, so the rule is real.
    reversed_labels = torch.tensor([0, 2, 3, 5, 1])
    assert weighted_knn_classify(train_features, reversed_labels, test_features, 6, k=1).nonzero().tolist() \
        == [[0, 2]]


def test_tie_only_in_some_rows_of_a_chunk():
    train_features, train_labels, test_features = random_problem(seed=8, num_train=60, num_test=6)
    train_features[10:14] = train_features[2]  # four copies of row 2, so five rows tie for test row 0
    train_labels[2:14] = torch.arange(12) % NUM_CLASSES
    test_features[0] = train_features[2]
    votes = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=3, chunk_size=6)
    expected, max_similarity = paper_votes(train_features, train_labels, test_features, NUM_CLASSES, 3, 0.07)
    np.testing.assert_allclose(votes.numpy(), expected / np.exp(max_similarity / 0.07)[:, None],
                               rtol=vote_rtol(3, 0.07), atol=0)
    # Test row 0: the neighbours are training rows 2, 10, 11 (labels 0, 8, 0), not 12 or 13.
    assert votes[0].tolist() == [2.0, 0, 0, 0, 0, 0, 0, 0, 1.0]


def test_collapsed_features_vote_with_first_k_training_rows():
    train_labels = torch.tensor([4, 4, 1, 2, 2, 2, 0, 0])
    train_features = torch.ones(8, 5)  # every similarity is 1: all rows tie
    test_features = torch.randn(3, 5).abs()
    votes = weighted_knn_classify(train_features, train_labels, test_features, 5, k=4)
    assert votes.tolist() == [[0.0, 1.0, 1.0, 0.0, 2.0]] * 3


def test_tie_in_votes_ranks_lower_class_first():
    basis = torch.eye(3)
    # Two training rows equal to the test row with labels 3 and 1: equal votes for classes 1 and 3.
    train_features = torch.stack([basis[0], basis[0], basis[1]])
    train_labels = torch.tensor([3, 1, 2])
    votes = weighted_knn_classify(train_features, train_labels, basis[:1], 5, k=2)
    assert votes[0, 1] == votes[0, 3] == 1.0
    assert top_classes(votes, 5).tolist() == [[1, 3, 0, 2, 4]]
    assert topk_accuracy(votes, torch.tensor([1]), topk=(1, 2)) == (100.0, 100.0)
    assert topk_accuracy(votes, torch.tensor([3]), topk=(1, 2)) == (0.0, 100.0)


def test_top_classes_orders_many_ties_by_class_index():
    # torch.topk and an unstable sort return tied classes in no fixed order once C is large.
    scores = torch.zeros(3, 100)
    scores[:, ::3] = 1.0  # classes 0, 3, 6, ... tie at 1, the others at 0
    expected = np.argsort(-scores.numpy(), axis=1, kind='stable')
    assert torch.equal(top_classes(scores, 100), torch.from_numpy(expected))
    assert top_classes(scores, 3).tolist() == [[0, 3, 6]] * 3
    assert topk_accuracy(scores, torch.tensor([3, 6, 99]), topk=(2, 3)) == (100 / 3, 200 / 3)


def test_topk_accuracy_counts_in_percent():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    labels = torch.tensor([1, 2, 1, 1])
    # Row 1: classes 1 and 2 tie at 0.05 behind class 0, so class 2 is third.
    # Row 3: classes 0 and 1 tie behind class 2, so class 1 is third.
    assert topk_accuracy(scores, labels, topk=(1, 2, 3, 5)) == (25.0, 50.0, 100.0, 100.0)


def test_tiny_tau_does_not_overflow():
    train_features, train_labels, test_features = random_problem(seed=9)
    votes = weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=20, tau=1e-6)
    assert torch.isfinite(votes).all()
    nearest = top_classes(weighted_knn_classify(train_features, train_labels, test_features, NUM_CLASSES, k=1), 1)
    assert torch.equal(top_classes(votes, 1), nearest)  # tau -> 0 is the 1-NN classifier


@pytest.mark.parametrize('kwargs, message', [
    (dict(k=0), 'k, tau and chunk_size must be positive, got k=0'),
    (dict(tau=0.0), 'tau=0.0'),
    (dict(chunk_size=0), 'chunk_size=0'),
    (dict(num_classes=5), r'train_labels span \[0, 6\], outside \[0, num_classes=5\).*at least 7'),
    (dict(train_labels=torch.cat([torch.tensor([-1]), torch.arange(299) % 7])), r'span \[-1, 6\]'),
    (dict(train_labels=torch.zeros(299, dtype=torch.long)), r'train_labels must be \(300,\)'),
    (dict(train_features=torch.randn(0, 16)), r'non-empty \(N_train, D\).*\(0, 16\)'),
    (dict(test_features=torch.randn(4, 8)), r'test_features must be \(N_test, 16\).*\(4, 8\)'),
    (dict(test_features=torch.full((2, 16), float('nan'))), 'test_features contain NaN or inf'),
])
def test_classify_errors_name_value_and_fix(kwargs, message):
    train_features, train_labels, test_features = random_problem(seed=10)
    arguments = dict(train_features=train_features, train_labels=train_labels, test_features=test_features,
                     num_classes=NUM_CLASSES)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        weighted_knn_classify(**arguments)


@pytest.mark.parametrize('scores, labels, topk, message', [
    (torch.zeros(0, 3), torch.zeros(0), (1,), 'got 0 samples'),
    (torch.zeros(2, 3), torch.zeros(3), (1,), r'labels \(N,\), got \(2, 3\) and \(3,\)'),
    (torch.zeros(2, 3), torch.zeros(2), (0, 5), r'positive integers, got \(0, 5\)'),
])
def test_accuracy_errors_name_value_and_fix(scores, labels, topk, message):
    with pytest.raises(ValueError, match=message):
        topk_accuracy(scores, labels, topk)


def fake_samples(features, labels, split):
    """What the algorithm's predict() returns on a KNNSplits item: DataSample with knn_feature and gt_label."""
    samples = []
    for feature, label in zip(features, labels):
        sample = DataSample(metainfo={'knn_split': split}).set_gt_label(int(label))
        sample.knn_feature = feature
        samples.append(sample)
    return samples


def test_metric_matches_function_and_is_prefixed():
    train_features, train_labels, test_features = random_problem(seed=11)
    test_labels = torch.randint(0, 7, (len(test_features),), generator=torch.Generator().manual_seed(0))
    metric = METRICS.build(dict(type='WeightedKNN', k=20, tau=0.1, chunk_size=8, topk=(1, 3, 5)))
    train_samples = fake_samples(train_features, train_labels, 'train')
    test_samples = fake_samples(test_features, test_labels, 'test')
    mixed = train_samples[:100] + test_samples[:25] + train_samples[100:] + test_samples[25:]
    for start in range(0, len(mixed), 32):  # batches mix the splits; DataSample and dict inputs both work
        batch = mixed[start:start + 32]
        metric.process(None, batch if start % 64 else [sample.to_dict() for sample in batch])
    assert len(metric.results) == 340
    result = metric.evaluate(size=340)
    votes = weighted_knn_classify(train_features, train_labels, test_features, 7, k=20, tau=0.1, chunk_size=8)
    expected = topk_accuracy(votes, test_labels, (1, 3, 5))
    assert result == {'knn/top1': expected[0], 'knn/top3': expected[1], 'knn/top5': expected[2]}
    assert expected[0] < expected[1] < expected[2]
    assert metric.results == []


def test_metric_through_mmengine_evaluator_stores_cpu_copies():
    train_features, train_labels, test_features = random_problem(seed=12, num_train=30, num_test=10)
    evaluator = Evaluator(WeightedKNN(k=5))
    batch_features = torch.cat([train_features, test_features])  # one batch; features are views of it
    samples = (fake_samples(batch_features[:30], train_labels, 'train')
               + fake_samples(batch_features[30:], torch.zeros(10, dtype=torch.long), 'test'))
    evaluator.process(samples)
    stored_feature = evaluator.metrics[0].results[0][0]
    assert stored_feature.untyped_storage().nbytes() == 16 * 4  # a copy, not the whole batch's storage
    result = evaluator.evaluate(40)
    votes = weighted_knn_classify(train_features, train_labels, test_features, 7, k=5)
    assert result['knn/top1'] == topk_accuracy(votes, torch.zeros(10, dtype=torch.long), (1,))[0]


def test_metric_num_classes_from_dataset_meta_and_labels():
    train_features, train_labels, test_features = random_problem(seed=13, num_train=30, num_test=10)
    metric = WeightedKNN(k=5)
    metric.process(None, fake_samples(train_features, train_labels, 'train'))
    metric.process(None, fake_samples(test_features, torch.full((10,), 8), 'test'))
    assert metric._resolve_num_classes(train_labels, torch.full((10,), 8)) == 9
    metric.dataset_meta = {'classes': [str(index) for index in range(12)]}
    assert metric._resolve_num_classes(train_labels, torch.full((10,), 8)) == 12
    assert WeightedKNN(num_classes=20)._resolve_num_classes(train_labels, torch.full((10,), 8)) == 20
    assert metric.evaluate(40) == {'knn/top1': 0.0, 'knn/top5': 0.0}  # class 8 has no training sample


@pytest.mark.parametrize('splits, message', [
    (('train',), "got 30 'train' and 0 'test' samples"),
    (('test',), "got 0 'train' and 30 'test' samples"),
])
def test_metric_needs_both_splits(splits, message):
    train_features, train_labels, _ = random_problem(seed=14, num_train=30)
    metric = WeightedKNN()
    for split in splits:
        metric.process(None, fake_samples(train_features, train_labels, split))
    with pytest.raises(ValueError, match=message + ".*wrap the val dataset in dict\\(type='KNNSplits'"):
        metric.evaluate(30)


def test_metric_rejects_samples_without_split_or_feature():
    sample = DataSample().set_gt_label(1)  # no knn_split: the val dataset is not wrapped
    sample.knn_feature = torch.ones(4)
    with pytest.raises(ValueError, match="got None; wrap the val dataset in dict\\(type='KNNSplits'"):
        WeightedKNN().process(None, [sample])
    unmarked = DataSample(metainfo={'knn_split': 'val'}).set_gt_label(1)
    with pytest.raises(ValueError, match="got 'val'"):
        WeightedKNN().process(None, [unmarked])
    featureless = DataSample(metainfo={'knn_split': 'train'}).set_gt_label(1)
    with pytest.raises(ValueError, match='fields knn_feature and gt_label.*predict\\(\\) must store'):
        WeightedKNN().process(None, [featureless])
    featureless.knn_feature = torch.ones(1, 4)
    with pytest.raises(ValueError, match=r'1-D knn_feature per sample, got shape \(1, 4\)'):
        WeightedKNN().process(None, [featureless])


@pytest.mark.parametrize('kwargs, message', [
    (dict(k=0), 'got k=0'),
    (dict(tau=-1.0), 'tau=-1.0'),
    (dict(num_classes=0), 'num_classes must be positive or None, got 0'),
    (dict(topk=()), r'topk must hold positive integers, got \(\)'),
])
def test_metric_arguments_checked_at_build(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightedKNN(**kwargs)
