# NPID on the CPU in a few minutes: the PIC tiny config (configs/pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py:
# the same 16-wide ResNet-18, digits, batch, epochs and lr schedule) with NPID's one-layer linear projection and
# MemoryBankNCE in place of the MLP and the parametric classifier. `python tools/demo.py --config THIS` compares
# its weighted kNN with the random network's; README, "Learning quality", compares it with PIC over seeds.
_base_ = ['../pic/pic_resnet18-w16_1xb128-coslr-20e_digits.py']
model = dict(
    # the kNN votes with the pooled backbone feature, as PIC's digits config does, so the two compare on one
    # feature; NPID Sec. 3.4's protocol is --cfg-options model.knn_feature=projection
    knn_feature='backbone',
    # One Linear layer as NPID (Sec. 4.1), followed by BatchNorm (mmpretrain's LinearNeck default), which NPID's
    # release does not have. Without it the random network's projections are nearly collinear (mean cosine 0.85
    # within a batch) and the bank collapses onto one direction in a few epochs; over 3 seeds (README, "Learning
    # quality") the kNN top-1 after 8 epochs is 50.06 +- 1.91 without it against 86.64 +- 2.44 with it. BatchNorm
    # centres the batch.
    neck=dict(
        _delete_=True, type='LinearNeck', in_channels=128, out_channels=128, gap_dim=2, norm_cfg=dict(type='BN1d')),
    # 1,500 images are few enough for the exact non-parametric softmax (NPID Eq. 2), tau = 0.07, bank momentum
    # 0.5. loss='nce' with num_noise below 1,500 gives the NCE approximation (Eq. 4-8).
    head=dict(_delete_=True, type='MemoryBankNCE', num_classes=1500, in_channels=128, loss='softmax',
              temperature=0.07, bank_momentum=0.5),
)
# NPID's CIFAR recipe at batch 128 (the CIFAR script of the authors' release): SGD lr 0.03, momentum 0.9, weight
# decay 5e-4. The bank has no parameters: the SGD covers the whole model. The schedule is the PIC tiny config's:
# warm-up over epochs / 40, then cosine.
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='LazyCorrectedSGDConstructor',
    optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=5e-4))
