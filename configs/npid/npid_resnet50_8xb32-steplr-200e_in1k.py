_base_ = ['../npid_r50.py']
