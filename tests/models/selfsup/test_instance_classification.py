import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from conftest import TINY_CONFIG
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
