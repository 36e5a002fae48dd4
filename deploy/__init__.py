"""Serving a trained run without PyTorch: its exported model.onnx, run by onnxruntime.

This package needs only onnxruntime, numpy and Pillow (requirements-deploy.txt) and imports
nothing from ``src/``, so the folder can be copied to a server on its own. The workbench uses its
torch-free parts too (reading image files, the predictions' CSV, the export's fingerprints), so
those are written once, here.
"""
