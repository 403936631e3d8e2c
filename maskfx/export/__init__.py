"""ONNX export, verification and ONNX Runtime sessions."""
from maskfx.export.onnx import ExportReport, ExportVerificationError, export_onnx
from maskfx.export.runtime import ProviderError, RuntimeSession, open_session

__all__ = ["ExportReport", "ExportVerificationError", "ProviderError", "RuntimeSession", "export_onnx", "open_session"]
