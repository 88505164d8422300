"""Every config loads, names the host scope and imports the plugin; the ImageNet config builds without data."""
import pytest
import skimage.data
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS, PARAM_SCHEDULERS
from PIL import Image

from conftest import REPO_ROOT
from pic_plugin import check_custom_imports
from pic_plugin.datasets import VisitKey

# pre-training configs; the downstream ones under benchmarks/ belong to their hosts' scopes (tests/benchmarks/)
CONFIGS = sorted(p for p in (REPO_ROOT / 'configs').rglob('*.py') if not {'_base_', 'benchmarks'} & set(p.parts))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT / 'configs')))
def test_config_loads_with_scope_and_imports(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['pic_plugin'], allow_failed_imports=False)
    check_custom_imports(cfg)
    assert '_scope_' not in cfg.pretty_text  # no cross-package base leaks a scope into collate_fn


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT / 'configs')))
def test_every_random_training_transform_is_seeded_by_its_visit(path):
    """What tests/tools/test_resume.py shows exact for any loader setting holds for every pre-training config."""
    loader = Config.fromfile(path).train_dataloader
    assert loader.sampler.type in ('KeyedDefaultSampler', 'SlidingWindowSampler')  # they yield VisitKeys
    steps = [step['type'] for step in loader.dataset.pipeline]
    assert 'SeededByVisit' in steps and set(steps) <= {'LoadImageFromFile', 'SeededByVisit', 'PackInputs'}


def test_pic_r50_builds_model_pipeline_and_optimiser(tmp_path):
    import pic_plugin  # noqa: F401
    cfg = Config.fromfile(REPO_ROOT / 'configs' / 'pic_r50.py')
    init_default_scope(cfg.default_scope)
    assert cfg.train_dataloader.batch_size == 64
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.03 * 512 / 256)
    model = MODELS.build(cfg.model)
    assert model.head.rows.weight.shape == (1281167, 128)
    assert model.head.temperature == 0.2
    assert model.neck.fc1.out_features == 128

    pipeline = Compose(cfg.train_pipeline)
    photo = tmp_path / 'astronaut.png'
    Image.fromarray(skimage.data.astronaut()).save(photo)  # a real 512x512 photograph shipped by scikit-image
    for epoch in range(20):  # colour jitter (hue included) is drawn anew for every visit
        packed = pipeline(dict(img_path=str(photo), sample_idx=VisitKey(17, seed=0, epoch=epoch, position=3)))
        assert [tuple(view.shape) for view in packed['inputs']] == [(3, 224, 224)]  # one view
        assert packed['data_samples'].sample_idx == 17

    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(optim_wrapper).__name__ == 'LazyCorrectedSGD'
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optim_wrapper), default_args=dict(epoch_length=2502))
                  for s in cfg.param_scheduler]
    assert [type(s).__name__ for s in schedulers] == ['LinearLR', 'CosineAnnealingLR']
    assert optim_wrapper.param_groups[0]['lr'] == pytest.approx(0.06 * 0.01)


def test_a_config_that_forgets_custom_imports_is_refused(tmp_path):
    source = (REPO_ROOT / 'configs' / 'pic_r50.py').read_text()
    config = tmp_path / 'no_imports.py'
    config.write_text(source.replace("'_base_/", f"'{REPO_ROOT / 'configs'}/_base_/") + '\ncustom_imports = None\n')
    cfg = Config.fromfile(config)
    with pytest.raises(ValueError, match=r"uses .*InstanceClsHead.* but does not import it: add `custom_imports"):
        check_custom_imports(cfg)


def ablation(name):
    return Config.fromfile(REPO_ROOT / 'configs' / 'pic' / 'ablations' / name)


@pytest.mark.parametrize('log2_k', [9, 10, 12, 14, 16, 18])
@pytest.mark.parametrize('correction', [True, False])
def test_table2_configs_set_k_and_correction_on_the_epoch_scheduler(log2_k, correction):
    suffix = '' if correction else '-nocorrection'
    cfg = ablation(f'pic_resnet50_8xb64-epochsampler-k{2 ** log2_k}{suffix}-coslr-200e_in1k.py')
    assert cfg.model.head.negatives == 'recent' and cfg.model.head.num_negatives == 2 ** log2_k
    assert cfg.optim_wrapper.correction is correction
    assert cfg.train_dataloader.sampler == dict(type='KeyedDefaultSampler', shuffle=True)


@pytest.mark.parametrize('window, stride', [(262144, 16384), (65536, 16384), (32768, 16384), (131072, 32768),
                                            (131072, 8192), (131072, 4096)])
def test_table3_configs_set_the_window(window, stride):
    cfg = ablation(f'pic_resnet50_8xb64-w{window}-s{stride}-coslr-200e_in1k.py')
    assert cfg.train_dataloader.sampler == dict(type='SlidingWindowSampler', window_size=window, stride=stride)


@pytest.mark.parametrize('epochs', [50, 100, 400, 1600])
@pytest.mark.parametrize('window', [True, False])
def test_table4_configs_scale_the_schedule(epochs, window):
    name = f'pic_resnet50_8xb64-{"" if window else "epochsampler-"}coslr-{epochs}e_in1k.py'
    cfg = ablation(name)
    assert cfg.train_cfg.max_epochs == epochs
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == cosine.begin == epochs / 40 and cosine.end == epochs
    assert cfg.train_dataloader.sampler.type == ('SlidingWindowSampler' if window else 'KeyedDefaultSampler')


def test_pic_r50_is_the_paper_default():
    cfg = Config.fromfile(REPO_ROOT / 'configs' / 'pic_r50.py')
    assert cfg.train_dataloader.sampler == dict(type='SlidingWindowSampler', window_size=131072, stride=16384)
    assert (cfg.model.head.negatives, cfg.model.head.num_negatives) == ('recent', 65536)
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.constructor) == ('OptimWrapper', 'LazyCorrectedSGDConstructor')
    assert cfg.optim_wrapper.correction is True
    assert cfg.train_cfg.max_epochs == 200 and cfg.train_dataloader.batch_size * 8 == 512
