_base_ = ['../pic_r50.py']
