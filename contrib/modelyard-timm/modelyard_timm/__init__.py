"""modelyard-timm: timm image classifiers and an int8 ONNX export format for modelyard.

The entry point ``timm`` (group ``modelyard``) names ``modelyard_timm.plugin``;
``architectures`` holds the curated models, ``int8`` the ``onnx_int8`` exporter.
"""

__version__ = "0.1.0"
