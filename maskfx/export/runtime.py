"""ONNX Runtime sessions: the CUDA provider when it really loads, the CPU one otherwise."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch  # imported before onnxruntime so its CUDA libraries are the ones found
import onnxruntime as ort

from maskfx.errors import UserError

DEVICES = ("auto", "cuda", "cpu")


@functools.lru_cache(maxsize=None)
def _cuda_provider_offered() -> bool:
    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ort.preload_dlls()  # torch's CUDA/cuDNN from the nvidia wheels, when ORT needs them
    except Exception:  # a failed preload only means the session below falls back to CPU
        pass
    return True


class ProviderError(RuntimeError):
    """The ONNX Runtime provider that was asked for (``device="cuda"``) did not load."""


@dataclass
class RuntimeSession:
    """An ``InferenceSession`` plus the provider that actually runs it."""

    session: ort.InferenceSession
    provider: str  # "CUDAExecutionProvider" or "CPUExecutionProvider"

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def feeds(self, inputs: Sequence[torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
        if len(arrays) != len(self.input_names):
            raise UserError(f"the model takes {len(self.input_names)} inputs, got {len(arrays)}")
        return dict(zip(self.input_names, arrays))

    def run(self, *inputs: torch.Tensor | np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, self.feeds(inputs))


def providers_for(device: str = "auto") -> list[str]:
    """The providers a session for ``device`` asks ONNX Runtime for, first choice first: known
    before any file exists, so an export can pick the rewrites for the provider that will run it."""
    if device not in DEVICES:
        raise UserError(f"device must be one of {DEVICES}, got {device!r}")
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and _cuda_provider_offered():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def open_session(path: str | os.PathLike, device: str = "auto", threads: int | None = None) -> RuntimeSession:
    """Open ``path`` in ONNX Runtime.

    ``device="auto"`` uses CUDA when torch sees a GPU and ORT's CUDA provider loads, else CPU;
    ``"cuda"`` raises if the CUDA provider does not load; ``"cpu"`` never tries it.
    """
    providers = providers_for(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; which provider runs is reported on the result
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(os.fspath(path), options, providers=providers)
    provider = session.get_providers()[0]
    if device == "cuda" and provider != "CUDAExecutionProvider":
        raise ProviderError(f"device='cuda' but ONNX Runtime runs {provider}: the CUDA provider did not load "
                           f"(torch CUDA available: {torch.cuda.is_available()}, "
                           f"ORT providers: {ort.get_available_providers()})")
    return RuntimeSession(session, provider)
