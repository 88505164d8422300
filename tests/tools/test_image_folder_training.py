"""End-to-end: PIC pre-trains on a generated folder of unlabelled PNGs (flat, and nested with a kNN split) through
tools/train.py with num_classes='auto', resumes with its rows, and stops before training on a missing folder.

The folders mix RGB, greyscale, greyscale + alpha, RGBA and palette images of random sizes; batches of 32, one
epoch, no loader workers.
"""
import sys

from conftest import REPO_ROOT, load_checkpoint, run_cli
from image_folders import write_image_folder, write_labelled_split

CONFIGS = REPO_ROOT / 'configs' / 'pic'
CONFIG = CONFIGS / 'pic_resnet18-w16_1xb128-coslr-20e_imagefolder.py'
KNN_CONFIG = CONFIGS / 'pic_resnet18-w16_1xb128-coslr-20e_imagefolder-knn.py'
SHORT_RUN = ['train_dataloader.batch_size=32', 'train_dataloader.num_workers=0', 'default_hooks.logger.interval=1']


def train(config, work_dir, cwd, *options, resume=False):
    resumed = ['--resume'] if resume else []
    return run_cli([sys.executable, REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir, *resumed,
                    '--cfg-options', *SHORT_RUN, *options], cwd=cwd)


def assert_trained(result, work_dir, epoch, num_images):
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert (f"InstanceCountCheckHook: {num_images} training images, so InstanceClsHead (num_classes='auto') gets "
            f'{num_images} rows') in log
    assert f'Epoch(train) [{epoch}][2/2]' in log  # 64 images, batches of 32
    state = load_checkpoint(work_dir / f'epoch_{epoch}.pth')['state_dict']
    assert state['head.rows.weight'].shape == (num_images, 128)
    return log, state


def test_pic_trains_on_a_flat_folder_sized_by_the_data_and_resumes_with_its_rows(tmp_path):
    write_image_folder(tmp_path / 'photos', 64, nested=False)
    work_dir = tmp_path / 'work'
    first = train(CONFIG, work_dir, tmp_path, 'train_dataloader.dataset.data_root=photos', 'train_cfg.max_epochs=1')
    assert_trained(first, work_dir, 1, 64)
    resumed = train(CONFIG, work_dir, tmp_path, 'train_dataloader.dataset.data_root=photos',
                    'train_cfg.max_epochs=2', resume=True)
    log, _ = assert_trained(resumed, work_dir, 2, 64)
    assert 'resumed epoch: 1, iter: 2' in log
    # the rows existed when the checkpoint was loaded: mmengine warns of keys it could not place otherwise
    assert 'do not match' not in log and 'unexpected key' not in log


def test_pic_trains_on_a_nested_folder_and_evaluates_a_labelled_split_with_knn(tmp_path):
    write_image_folder(tmp_path / 'photos', 64, nested=True)
    write_labelled_split(tmp_path / 'labelled', classes=3, train_per_class=6, test_per_class=3)
    work_dir = tmp_path / 'work'
    result = train(KNN_CONFIG, work_dir, tmp_path, 'train_dataloader.dataset.data_root=photos',
                   'val_dataloader.dataset.train.data_root=labelled', 'val_dataloader.dataset.test.data_root=labelled',
                   'val_evaluator.k=5', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                   'val_dataloader.num_workers=0')
    log, _ = assert_trained(result, work_dir, 1, 64)
    assert 'Epoch(val) [1][1/1]' in log and 'knn/top1: ' in log


def test_a_missing_folder_stops_before_training_with_the_key_to_set(tmp_path):
    result = train(CONFIG, tmp_path / 'work', tmp_path, 'train_dataloader.dataset.data_root=no_such_folder')
    assert result.returncode != 0
    assert (f"there is no folder {tmp_path / 'no_such_folder'} (data_root='no_such_folder', data_prefix=''): set "
            'train_dataloader.dataset.data_root') in result.stderr, result.stderr[-3000:]
    assert 'Epoch(train)' not in result.stdout + result.stderr
    assert not list(tmp_path.rglob('*.pth'))
