"""tools/count_images.py prints the size that num_classes='auto' gives the head, and --check names every image
that cannot be loaded."""
import sys

from conftest import REPO_ROOT, run_cli
from image_folders import write_image_folder

CONFIG = REPO_ROOT / 'configs' / 'pic' / 'pic_resnet18-w16_1xb128-coslr-20e_imagefolder.py'


def test_count_and_check_a_folder_with_one_broken_image(tmp_path):
    write_image_folder(tmp_path / 'photos', 20, nested=True)
    broken = tmp_path / 'photos' / 'a' / 'b' / 'interrupted_copy.png'
    broken.write_bytes(b'')
    result = run_cli([sys.executable, REPO_ROOT / 'tools' / 'count_images.py', CONFIG, '--cfg-options',
                      'train_dataloader.dataset.data_root=photos', '--check', '--workers', '2'], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (f"21 training images under {tmp_path / 'photos'}: num_classes='auto' gives the head 21 rows "
            '(--cfg-options model.head.num_classes=21 pins that size)') in result.stdout
    assert '20 of 21 images load, these do not:\n' in result.stdout
    assert '  photos/a/b/interrupted_copy.png: error: OpenCV' in result.stdout  # cv2's "!buf.empty()"
