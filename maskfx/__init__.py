"""maskfx: let a PyTorch network learn its own structure, then ship it small.

    net = maskfx.transform(model, jumpout=True)
    ... train net ...
    deploy = maskfx.collapse(net, mode="expected")
    path, report = maskfx.export_onnx(deploy, "model.onnx", example_inputs=(x,))
"""
from maskfx.budget import budget_penalty
from maskfx.config import Budget
from maskfx.errors import UserError
from maskfx.export import ExportReport, export_onnx
from maskfx.layers.kofn import clip_masks
from maskfx.record import StateMismatchError
from maskfx.collapse_report import CollapseReport
from maskfx.structure import LearnedSite, structure
from maskfx.techniques.blockout.config import BlockoutConfig
from maskfx.techniques.channels.config import ChannelConfig
from maskfx.techniques.gateconnect.config import GateConnectConfig
from maskfx.techniques.jumpout.config import JumpoutConfig
from maskfx.techniques.maskconnect.config import MaskConnectConfig
from maskfx.tracing import TraceError
from maskfx.train import clip_masks_after_steps, param_groups, recalibrate
from maskfx.transform import Summary, collapse, freeze, summary, transform

__all__ = [
    "BlockoutConfig", "Budget", "ChannelConfig", "GateConnectConfig", "JumpoutConfig", "MaskConnectConfig", "CollapseReport", "ExportReport", "LearnedSite", "StateMismatchError", "Summary", "TraceError",
    "UserError",
    "budget_penalty", "clip_masks", "clip_masks_after_steps", "collapse", "export_onnx", "freeze", "param_groups", "recalibrate", "structure", "summary", "transform",
]
