"""The registry: every technique, one line each, in rewrite order.

Structure first (channel gates on the untouched graph, ResNeXt branches before residual blocks,
which skip the modules GateConnect took), then regularisers around what is left. Collapse runs in reverse, and so do the lists that
users read (summary, structure, command-line flags). A technique is its folder: adding one is
a folder and a line here (``maskfx.technique.Technique`` says what the folder provides).
"""
from maskfx.technique import Technique
from maskfx.techniques import blockout, channels, gateconnect, jumpout, maskconnect

PIPELINE: tuple[Technique, ...] = (
    channels,
    gateconnect,
    maskconnect,
    blockout,
    jumpout,
)
