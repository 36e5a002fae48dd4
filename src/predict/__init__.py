"""A saved run put to use, read from its folder alone (never from the training config).

    predictor.py    top-k classes and attention maps for image files
    rebuild.py      a run's report written again (inference.py --report)
    onnx_export.py  model.onnx, for the torch-free predictor in deploy/
    timm_export.py  weights and config.json that timm loads
    hf_export.py    those and a README.md model card: a Hugging Face-style folder

Nothing here trains.
"""
