"""Export: SavedModels for TF Serving, TFLite, and loading them back."""

from tftransfer.export.saved_model import ExportResult, export, load_model
from tftransfer.export.serving import rest_request_body
from tftransfer.export.tflite import tflite_predict

__all__ = ["ExportResult", "export", "load_model", "rest_request_body", "tflite_predict"]
