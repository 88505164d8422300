"""HostResumeRunner reads a resumed checkpoint into host memory where mmengine's Runner maps it onto the GPU, and
the configs build it."""
import pytest
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner, runner

from conftest import REPO_ROOT, TINY_CONFIG
from pic_plugin.engine.runners import HostResumeRunner


class Loaded(Exception):
    """Raised by the spy once the checkpoint's map_location is known."""


@pytest.mark.parametrize('runner_class, expected', [(Runner, 'cuda'), (HostResumeRunner, 'cpu')])
def test_resume_reads_the_checkpoint_into_host_memory(runner_class, expected, monkeypatch):
    """On a GPU (``get_device()`` says 'cuda'), mmengine's resume maps every tensor, the whole instance table among
    them, onto the GPU; HostResumeRunner keeps them on the host. The plain Runner is the check that this can fail."""
    seen = {}

    def spy_load_checkpoint(self, filename, map_location='cpu', **kwargs):
        seen['map_location'] = map_location
        raise Loaded

    monkeypatch.setattr(runner, 'get_device', lambda: 'cuda')
    monkeypatch.setattr(Runner, 'load_checkpoint', spy_load_checkpoint)
    with pytest.raises(Loaded):
        runner_class.resume(object.__new__(runner_class), 'epoch_1.pth')
    assert seen['map_location'] == expected


CONFIGS = REPO_ROOT / 'configs'


@pytest.mark.parametrize('config', [TINY_CONFIG, CONFIGS / 'pic_r50.py', CONFIGS / 'npid_r50.py',
                                    CONFIGS / 'full_classifier' / 'fullcls_resnet50_64xb64-coslr-200e_in1k.py'])
def test_the_configs_build_the_host_resume_runner(config):
    """tools/train.py and mmpretrain's train script build ``runner_type`` from mmengine's root RUNNERS registry,
    before any default scope is set: the configs' name must resolve there."""
    cfg = Config.fromfile(config)
    with RUNNERS.switch_scope_and_registry(None) as registry:
        assert registry.get(cfg.runner_type) is HostResumeRunner
