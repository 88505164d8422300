import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from conftest import REPO_ROOT, TINY_CONFIG
from pic_plugin.engine.optimizers import LazyCorrectedSGD


@pytest.fixture()
def model():
    import pic_plugin  # noqa: F401
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.head.num_classes = 20
    torch.manual_seed(0)  # the network and the images after it: a random start's loss varies by seed (about +-0.45)
    return MODELS.build(cfg.model)


def samples(indices):
    return [DataSample(metainfo=dict(sample_idx=i)) for i in indices]


def test_loss_labels_each_image_by_its_sample_idx(model):
    wrapper = LazyCorrectedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    wrapper.register_rows(model)
    assert wrapper.row_sets == [model.head.rows]
    images = [torch.randn(4, 3, 32, 32)]
    losses = model(images, samples([0, 5, 19, 3]), mode='loss')
    assert set(losses) == {'loss'}
    assert torch.isfinite(losses['loss'])
    # a random network on 20 classes starts near log(20)
    assert losses['loss'].item() == pytest.approx(torch.log(torch.tensor(20.)).item(), abs=0.5)
    assert model.instance_labels(samples([0, 5]), torch.device('cpu')).tolist() == [0, 5]
    assert model.head.rows.handed_out.local_indices.tolist() == list(range(20))  # the full soft-max: every row
    before = model.head.rows.weight.clone()
    wrapper.update_params(losses['loss'])  # the network's step, then the rows'
    assert model.head.rows.num_steps == 1 and model.head.rows.handed_out is None
    assert (model.head.rows.last_step[[0, 5, 19, 3]] == 1).all()
    assert not torch.equal(model.head.rows.weight, before)


def test_train_step_refuses_a_wrapper_that_would_leave_the_rows_untrained(model):
    data = dict(inputs=[torch.randn(2, 3, 32, 32)], data_samples=samples([0, 1]))
    plain = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(TypeError, match=r"optim_wrapper is OptimWrapper, which does not train the instance rows of "
                       r"InstanceClsHead.*constructor='LazyCorrectedSGDConstructor'"):
        model.train_step(data, plain)
    wrapper = LazyCorrectedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    log_vars = model.train_step(data, wrapper)  # finds the rows itself at its first optim_context
    assert set(log_vars) == {'loss'} and wrapper.row_sets == [model.head.rows]
    assert model.head.rows.num_steps == 1


def test_views_and_project_are_the_steps_of_the_loss(model):
    images = torch.randn(2, 3, 32, 32)
    assert model.views(images)[0] is images and len(model.views([images, images])) == 2
    assert torch.equal(model.project(images), model.neck(model.backbone(images))[0])


def test_a_sample_without_sample_idx_is_refused(model):
    batch = samples([0]) + [DataSample(metainfo=dict(img_path='x.png'))]
    with pytest.raises(ValueError, match="sample 1 of the batch has no sample_idx.*PackInputs"):
        model([torch.randn(2, 3, 32, 32)], batch, mode='loss')


def test_predict_stores_pooled_backbone_features(model):
    model.eval()
    out = model([torch.randn(3, 3, 32, 32)], samples([0, 1, 2]), mode='predict')
    assert [s.knn_feature.shape for s in out] == [torch.Size([128])] * 3


def test_predict_can_store_the_normalised_projection_as_npid_evaluates(model):
    model.eval()
    model.knn_feature = 'projection'
    images = torch.randn(3, 3, 32, 32)
    out = model([images], samples([0, 1, 2]), mode='predict')
    expected = torch.nn.functional.normalize(model.neck(model.backbone(images))[0], dim=1)  # (B, 128)
    assert torch.equal(torch.stack([s.knn_feature for s in out]), expected)


def test_an_unknown_knn_feature_is_refused():
    cfg = Config.fromfile(TINY_CONFIG)
    with pytest.raises(ValueError, match=r"knn_feature='pooled' is not one of \('backbone', 'projection'\)"):
        MODELS.build(dict(cfg.model, knn_feature='pooled'))


def test_every_view_is_classified_as_its_image(model, monkeypatch):
    seen = {}

    def record(projections, labels):
        seen.update(shape=projections.shape, labels=labels.tolist())
        return {'loss': projections.sum()}

    monkeypatch.setattr(model.head, 'loss', record)
    model([torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)], samples([4, 0, 9]), mode='loss')
    assert seen == dict(shape=torch.Size([6, 128]), labels=[4, 0, 9, 4, 0, 9])


@pytest.fixture()
def multi_crop_model():
    import pic_plugin  # noqa: F401
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.head.num_classes = 20
    torch.manual_seed(0)
    return MODELS.build(dict(cfg.model, num_large_views=1))


def crops(generator_seed, batch=4):
    """One 32 px large crop and three 16 px small ones per image, as the digits multi-crop config makes them."""
    generator = torch.Generator().manual_seed(generator_seed)
    return [torch.randn(batch, 3, 32, 32, generator=generator)] + [
        torch.randn(batch, 3, 16, 16, generator=generator) for _ in range(3)]


def test_multi_crop_runs_each_size_as_one_batch_and_scores_the_small_crops_detached(multi_crop_model, monkeypatch):
    batches, seen = [], {}
    backbone_forward = multi_crop_model.backbone.forward
    monkeypatch.setattr(multi_crop_model.backbone, 'forward',
                        lambda images: batches.append(tuple(images.shape)) or backbone_forward(images))

    def record(feats, sample_idx, detached_feats, detached_sample_idx):
        seen.update(shapes=(feats.shape, detached_feats.shape), labels=sample_idx.tolist(),
                    detached_labels=detached_sample_idx.tolist())
        return {'loss': feats.sum() + detached_feats.sum()}

    monkeypatch.setattr(multi_crop_model.head, 'loss', record)
    multi_crop_model(crops(0, batch=3), samples([4, 0, 9]), mode='loss')
    assert batches == [(3, 3, 32, 32), (9, 3, 16, 16)]  # the large crop, then the small crops together
    assert seen == dict(shapes=(torch.Size([3, 128]), torch.Size([9, 128])), labels=[4, 0, 9],
                        detached_labels=[4, 0, 9] * 3)


def multi_crop_step(model, views, indices):
    """One LazyCorrectedSGD step on ``views``; the number of times the rows were handed out, and the small crops'
    gradient."""
    wrapper = LazyCorrectedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4))
    wrapper.register_rows(model)
    handed_out = []
    rows_for_step = model.head.rows.rows_for_step
    model.head.rows.rows_for_step = lambda *args: handed_out.append(args) or rows_for_step(*args)
    views = [view.requires_grad_(True) for view in views]
    wrapper.update_params(model(views, samples(indices), mode='loss')['loss'])
    return len(handed_out), [view.grad for view in views]


def test_only_the_large_crop_moves_the_rows_and_the_small_crops_train_the_network(multi_crop_model):
    twin = copy.deepcopy(multi_crop_model)
    other_small = crops(1)[1:]
    times_a, grads_a = multi_crop_step(multi_crop_model, crops(0), [0, 5, 19, 3])
    times_b, _ = multi_crop_step(twin, crops(0)[:1] + other_small, [0, 5, 19, 3])
    rows_a, rows_b = multi_crop_model.head.rows, twin.head.rows
    # other small crops, the same rows: they took no gradient from the small crops
    assert torch.equal(rows_a.weight, rows_b.weight) and torch.equal(rows_a.momentum, rows_b.momentum)
    # ... but the backbone and the neck did
    assert not torch.equal(multi_crop_model.backbone.conv1.weight, twin.backbone.conv1.weight)
    assert not torch.equal(multi_crop_model.neck.fc0.weight, twin.neck.fc0.weight)
    assert all(grad.abs().sum() > 0 for grad in grads_a)  # every crop back-propagates into the backbone
    # one row update per step, as the lazy correction expects
    assert times_a == times_b == 1 and rows_a.num_steps == 1 and rows_a.handed_out is None
    assert rows_a.last_step.tolist() == [1] * 20  # the full soft-max: every row, once


def test_one_view_under_multi_crop_is_the_single_crop_model(model, multi_crop_model):
    """Without small crops the multi-crop model is PIC's one-view model: the same loss and gradients, bit for bit."""
    images = torch.randn(4, 3, 32, 32)
    losses = []
    for each in (model, multi_crop_model):
        losses.append(each([images], samples([0, 5, 19, 3]), mode='loss')['loss'])
        losses[-1].backward()
        each.head.rows.step(lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert torch.equal(*losses)
    for (name, param), twin_param in zip(model.named_parameters(), multi_crop_model.parameters()):
        assert torch.equal(param.grad, twin_param.grad), name
    assert torch.equal(model.head.rows.weight, multi_crop_model.head.rows.weight)


def test_multi_crop_arguments_are_checked(multi_crop_model):
    cfg = Config.fromfile(TINY_CONFIG)
    with pytest.raises(ValueError, match=r'num_large_views=0 must be at least 1'):
        MODELS.build(dict(cfg.model, num_large_views=0))
    npid = Config.fromfile(REPO_ROOT / 'configs' / 'npid' / 'npid_resnet18-w16_1xb128-coslr-20e_digits.py')
    with pytest.raises(ValueError, match=r'num_large_views=1 \(multi-crop\) .* the head is MemoryBankNCE'):
        MODELS.build(dict(npid.model, num_large_views=1))
    multi_crop_model.num_large_views = 2
    with pytest.raises(ValueError, match=r'got 1 views per image for num_large_views=2.*num_views=\[1, 3\]'):
        multi_crop_model([torch.randn(2, 3, 32, 32)], samples([0, 1]), mode='loss')
