# Validation by the weighted kNN of NPID Sec. 3.4 (k = 200, tau = 0.07 as in training): the features of the
# labelled reference images (the `train` split of KNNSplits) vote, each weighted by exp(cosine / tau), for the
# images of its `test` split; WeightedKNN reports the top-1 / top-5 of the vote. The data set configs that include
# this piece name the two splits, both with their deterministic test pipeline, and the loader's workers:
#   val_dataloader = dict(num_workers=..., dataset=dict(train=dict(...), test=dict(...)))
val_dataloader = dict(
    batch_size=256,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='KNNSplits'))
val_evaluator = dict(type='WeightedKNN', k=200, tau=0.07)
val_cfg = dict()
