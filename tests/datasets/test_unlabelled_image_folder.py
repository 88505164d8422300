"""UnlabelledImageFolder lists every image of a flat or nested folder, explains a folder it cannot use, names a
file it cannot load; the configs' loader turns every image mode into 3-channel RGB."""
import numpy as np
import pytest
from mmcv.transforms import LoadImageFromFile
from PIL import Image

from image_folders import MIXED_MODES, random_image, write_image_folder
from pic_plugin.datasets import UnlabelledImageFolder


@pytest.mark.parametrize('nested', [False, True], ids=['flat', 'nested'])
def test_every_image_at_any_depth_is_one_instance_in_sorted_order(tmp_path, nested):
    images = write_image_folder(tmp_path / 'photos', 30, nested=nested)
    dataset = UnlabelledImageFolder(data_root=str(tmp_path), data_prefix='photos')
    assert len(dataset) == 30  # README.txt skipped
    assert [dataset.get_data_info(i)['img_path'] for i in range(30)] == [str(path) for path in images]
    assert 'gt_label' not in dataset.get_data_info(0)  # sub-folders are not classes
    assert [dataset[i]['sample_idx'] for i in (0, 29)] == [0, 29]  # the instance label of each image


def test_a_missing_folder_names_the_path_the_config_keys_and_the_layout(tmp_path):
    with pytest.raises(ValueError) as error:
        UnlabelledImageFolder(data_root=str(tmp_path / 'nowhere'), data_prefix='train')
    message = str(error.value)
    assert f'there is no folder {tmp_path / "nowhere" / "train"}' in message
    assert f"(data_root='{tmp_path / 'nowhere'}', data_prefix='train')" in message
    assert '--cfg-options train_dataloader.dataset.data_root=/path/to/images' in message
    assert 'Expected: image files (.bmp, .jpeg, .jpg' in message and 'sub-folders of any depth' in message


@pytest.mark.parametrize('other_files', [[], ['notes.txt', 'raw/scan.heic']], ids=['empty', 'no-images'])
def test_a_folder_without_images_says_what_it_holds_and_what_to_change(tmp_path, other_files):
    for name in other_files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('x')
    with pytest.raises(ValueError) as error:
        UnlabelledImageFolder(data_root=str(tmp_path))
    message = str(error.value)
    assert f'no image file under {tmp_path} (data_root=' in message
    found = 'it holds 2 other files (notes.txt, raw/scan.heic)' if other_files else 'it holds no file'
    assert found in message
    assert 'train_dataloader.dataset.extensions' in message and 'Expected: image files' in message


@pytest.mark.parametrize('content', [b'', b'this is not a PNG' * 8], ids=['empty-file', 'not-an-image'])
def test_a_file_that_cannot_be_loaded_is_named_with_the_fix(tmp_path, content):
    write_image_folder(tmp_path, 4, nested=False)
    (tmp_path / 'image_002.png').write_bytes(content)
    dataset = UnlabelledImageFolder(data_root=str(tmp_path), pipeline=[dict(type='LoadImageFromFile')])
    dataset[1]  # the others load
    with pytest.raises(ValueError) as error:
        dataset[2]
    assert f'the pipeline failed on image 2, {tmp_path / "image_002.png"} (' in str(error.value)
    assert str(error.value).endswith('remove or replace it; `python tools/count_images.py CONFIG --check` lists '
                                     'every file that fails to load.')


@pytest.mark.parametrize('mode', MIXED_MODES + ('I;16', '1'))
def test_every_image_mode_loads_as_the_rgb_image_pil_converts_it_to(tmp_path, mode):
    rng = np.random.default_rng(3)
    if mode == 'I;16':  # 16-bit greyscale, 8 bits of content scaled to 16
        gray = rng.integers(0, 256, (20, 24), dtype=np.uint16)
        Image.fromarray(gray * 257).save(tmp_path / 'image.png')
        expected = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)  # the high byte
    else:
        random_image(rng, mode).save(tmp_path / 'image.png')
        expected = np.asarray(Image.open(tmp_path / 'image.png').convert('RGB'))
    loaded = LoadImageFromFile()(dict(img_path=str(tmp_path / 'image.png')))['img']  # the configs' loader
    assert loaded.dtype == np.uint8 and loaded.shape == expected.shape
    assert np.array_equal(loaded[..., ::-1], expected)  # BGR, as every pipeline of the configs expects
