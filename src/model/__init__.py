"""The model: a Vision Transformer written by hand (vit.py), built from a model config
(build.py), and started from pretrained weights (pretrained.py).

Nothing here knows about Hydra's run folders, datasets or training; the parameter names are
timm's, so that timm's weights load into it and give the same logits.
"""
