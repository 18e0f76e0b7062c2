# The 160k recipe (see schedule_160k.py) shortened to 80k iterations (COCO-Stuff 164k).
_base_ = './schedule_160k.py'
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=1500,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(max_iters=80000)
