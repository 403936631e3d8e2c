"""ONNX export, verification and ONNX Runtime sessions."""
from maskfx.export.onnx import ExportReport, ExportVerificationError, export_onnx
from maskfx.export.runtime import RuntimeSession, open_session

__all__ = ["ExportReport", "ExportVerificationError", "RuntimeSession", "export_onnx", "open_session"]
