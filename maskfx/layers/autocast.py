"""How maskfx's custom autograd kernels meet ``torch.autocast``.

Under CUDA autocast the activations reaching a layer are bf16/fp16 while its weights and masks stay
fp32, and a hand-written backward would mix the two. The kernels therefore run in fp32 (their inputs
cast once on entry), and their backward in the autocast state of their forward, as
``torch.amp.custom_fwd``/``custom_bwd`` arrange. The ops around them still run in low precision.
"""
import torch

FP32_UNDER_AUTOCAST = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
BACKWARD_AS_FORWARD = torch.amp.custom_bwd(device_type="cuda")
