"""Prediction (DESIGN section 12): trained models answer about new images, in the server or in-process.

``images`` validates and preprocesses uploads, ``predictors`` runs a
checkpoint (PyTorch) or an ONNX export (onnxruntime), ``batcher`` merges
concurrent requests into batches, ``cache`` holds the loaded models, and
``service`` is what the API and the CLI call.
"""

from .images import DecodedImage, decode_upload
from .predictors import Predictor

__all__ = ["DecodedImage", "Predictor", "decode_upload"]
