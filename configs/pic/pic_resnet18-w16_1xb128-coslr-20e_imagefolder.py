# PIC on your own images, on the CPU: the digits tiny config (16-wide ResNet-18 with the CIFAR stem, 32 px crops,
# 20 epochs) on any folder of images, nested or flat, without labels (UnlabelledImageFolder: every image file
# under data_root, at any depth, is its own class; sub-folders are not classes):
#
#   python tools/train.py configs/pic/pic_resnet18-w16_1xb128-coslr-20e_imagefolder.py \
#       --cfg-options train_dataloader.dataset.data_root=/path/to/images
#
# num_classes='auto': InstanceCountCheckHook gives the classifier one row per image found and logs the count
# (`python tools/count_images.py CONFIG` prints it beforehand). Greyscale, palette and RGBA images may be mixed
# with RGB ones: LoadImageFromFile decodes each to 3 channels. Without labels there is no kNN evaluation;
# pic_resnet18-w16_1xb128-coslr-20e_imagefolder-knn.py adds it from a labelled split. The GPU recipe is
# pic_resnet50_8xb64-coslr-200e_imagefolder.py.
_base_ = ['./pic_resnet18-w16_1xb128-coslr-20e_digits.py']
data_root = 'data/my_images/'  # set it with --cfg-options train_dataloader.dataset.data_root=/path/to/images
model = dict(head=dict(num_classes='auto'))
# every step a full batch (BatchNorm cannot train on one image): a folder of at least batch_size images
train_dataloader = dict(drop_last=True,
                        dataset=dict(type='UnlabelledImageFolder', data_root=data_root, data_prefix=''))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
