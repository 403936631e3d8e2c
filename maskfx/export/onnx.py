"""ONNX export with the dynamo exporter, checked and verified against PyTorch in ONNX Runtime."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import onnx
import torch
from torch import nn

from maskfx import techniques
from maskfx.errors import UserError
from maskfx.export.peepholes import apply_peepholes
from maskfx.export.runtime import RuntimeSession, open_session, providers_for

# No random op may survive into a deployed graph.
RANDOM_OPS = frozenset({"Bernoulli", "RandomUniform", "RandomUniformLike", "RandomNormal",
                        "RandomNormalLike", "Multinomial", "Dropout"})
SINGLE_FILE_LIMIT = 1_800_000_000  # protobuf's 2 GiB limit, with room for the graph itself
SHOWN_LAYERS = 3  # maskfx layers a refusal names before "and N more"
SIDES = ("PyTorch", "ONNX Runtime")  # what a parity check compares, reference first


class ExportVerificationError(RuntimeError):
    """The exported graph failed a check; ``report`` says which."""

    def __init__(self, message: str, report: "ExportReport") -> None:
        super().__init__(message)
        self.report = report


@dataclass
class BatchCheck:
    """ONNX Runtime against PyTorch at one batch size. ``non_finite`` names each side whose outputs
    hold a NaN or an infinity: that fails the check whatever the difference says, as a NaN
    difference compares False and an infinite output makes the tolerance infinite."""

    batch: int
    max_abs_diff: float
    tolerance: float
    non_finite: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.non_finite and self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        if self.non_finite:
            return f"batch {self.batch}: non-finite output from {' and '.join(self.non_finite)}"
        return f"batch {self.batch}: max|diff| {self.max_abs_diff:.2e} (tol {self.tolerance:.1e})"


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and checked: the file, the ONNX Runtime provider that ran it,
    its nodes per op type, any random op, the parity with PyTorch per batch size, and the backend
    peepholes applied for the provider ``device`` picked, with the rewrites each made."""

    path: Path
    provider: str
    file_bytes: int
    node_count: int
    op_counts: dict[str, int]
    random_ops: list[str]
    checks: list[BatchCheck] = field(default_factory=list)
    peepholes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.random_ops and bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON, with the ``ok`` verdicts written out."""
        data = asdict(self)
        data.update(path=str(self.path), ok=self.ok)
        for check, entry in zip(self.checks, data["checks"]):
            entry["ok"] = check.ok
        return data

    def __str__(self) -> str:
        parity = ", ".join(map(str, self.checks))
        rewrites = ", ".join(f"{name} x{count}" for name, count in self.peepholes.items()) or "none"
        return (f"{self.path} ({self.file_bytes / 2**20:.1f} MiB, {self.node_count} nodes) on "
                f"{self.provider}; peepholes: {rewrites}; random ops: {self.random_ops or 'none'}; {parity}; "
                f"{'verified' if self.ok else 'FAILED'}")


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from iter_nodes(sub)


def op_histogram(model: onnx.ModelProto) -> Counter:
    ops = Counter(node.op_type for node in iter_nodes(model.graph))
    for function in model.functions:
        ops.update(node.op_type for node in function.node)
    return ops


def _batched(inputs: Sequence[torch.Tensor], size: int) -> tuple[torch.Tensor, ...]:
    """The example inputs cut or tiled along the batch dimension to ``size`` rows."""
    return tuple(x.repeat(-(-size // x.shape[0]), *([1] * (x.dim() - 1)))[:size] for x in inputs)


def _check_batch(model: nn.Module, session: RuntimeSession, inputs: tuple[torch.Tensor, ...],
                 atol: float, rtol: float) -> BatchCheck:
    """Run ``inputs`` through both sides and compare every output. The worst difference is a
    tensor maximum, which keeps a NaN (Python's ``max`` would drop it)."""
    with torch.no_grad():
        expected = model(*inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    refs = [ref.detach().float().cpu() for ref in expected]
    outs = [torch.from_numpy(out).float() for out in session.run(*inputs)]
    non_finite = [side for side, tensors in zip(SIDES, (refs, outs))
                  if not all(t.isfinite().all() for t in tensors)]
    worst = torch.stack([(ref - out).abs().max() for ref, out in zip(refs, outs)]).max().item()
    scale = torch.stack([ref.abs().max() for ref in refs]).max().item()
    return BatchCheck(inputs[0].shape[0], worst, atol + rtol * scale, non_finite)


def _maskfx_layers(model: nn.Module) -> list[str]:
    """The layers that still hold learned structure (each technique's ``LEARNED``), as
    "Type at 'name'". Their eval forward reads it from trainable values that only ``collapse``
    turns into plain layers, choosing "expected" or "prune". Jumpout learns none and is the
    identity in eval mode, so a net holding only Jumpout exports as its collapse would."""
    learned = tuple(layer for technique in techniques.PIPELINE for layer in technique.LEARNED)
    return [f"{type(m).__name__} at {name!r}" for name, m in model.named_modules() if isinstance(m, learned)]


def _check_collapsed(model: nn.Module) -> None:
    """Refuse a transformed net that was not collapsed: the exporter would fail on its top-K
    choices, or write the training layers into the deployed graph."""
    layers = _maskfx_layers(model)
    if not layers:
        return
    more = f" and {len(layers) - SHOWN_LAYERS} more" if len(layers) > SHOWN_LAYERS else ""
    raise UserError(f"this network still holds maskfx layers ({', '.join(layers[:SHOWN_LAYERS])}{more}): "
                     f"collapse it first: deploy = maskfx.collapse(net, mode='expected' or 'prune')")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_inputs: Sequence[torch.Tensor],
    dynamic_batch: bool = True,
    verify: bool = True,
    device: str = "auto",
    atol: float = 1e-4,
    rtol: float = 1e-4,
    opset: int | None = None,
) -> tuple[Path, ExportReport]:
    """Export ``model`` (in eval mode) to ONNX with torch's dynamo exporter and verify it.

    The result passes ``onnx.checker``, holds no random op, and (``verify=True``) its ONNX
    Runtime outputs match PyTorch's at two batch sizes, to ``atol + rtol * max|output|``; a NaN
    or an infinity in either side's outputs fails that check, as no tolerance can vouch for it.
    A failed check raises ``ExportVerificationError`` carrying the report. A ``maskfx.transform``
    result that still holds learned structure raises ``ValueError`` before anything is exported:
    ``collapse`` it first (a net with only Jumpout, the identity in eval mode, exports as it is).
    The graph exported is ``model`` after the backend peepholes of the provider ``device`` picks
    (``maskfx.export.peepholes``: exact rewrites, applied to a copy, so ``model`` is left as it is);
    to export for a CPU deployment from a GPU machine, pass ``device="cpu"``. The parity check runs
    ``model`` itself. Returns the path and the report; the file is a single ``.onnx`` unless the
    weights exceed protobuf's 2 GiB.
    """
    example_inputs = tuple(example_inputs)
    if not example_inputs or not all(isinstance(x, torch.Tensor) and x.dim() >= 1 for x in example_inputs):
        raise UserError("example_inputs must be a non-empty sequence of tensors with a batch dimension")
    _check_collapsed(model)
    provider = providers_for(device)[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        # A batch of 1 would be specialised by torch.export; trace with at least 2 rows.
        trace_inputs = _batched(example_inputs, max(2, example_inputs[0].shape[0])) if dynamic_batch else example_inputs
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in trace_inputs) if dynamic_batch else None
        exported, peepholes = apply_peepholes(model, provider, trace_inputs)
        param_bytes = sum(p.numel() * p.element_size() for p in exported.parameters())
        with torch.no_grad():
            torch.onnx.export(exported, trace_inputs, path, dynamo=True, verbose=False, opset_version=opset,
                              dynamic_shapes=dynamic_shapes, external_data=param_bytes > SINGLE_FILE_LIMIT)
        onnx.checker.check_model(os.fspath(path))
        proto = onnx.load(os.fspath(path), load_external_data=False)
        ops = op_histogram(proto)
        session = open_session(path, device=device)
        report = ExportReport(path, session.provider, path.stat().st_size, sum(ops.values()), dict(ops),
                              sorted(op for op in ops if op in RANDOM_OPS), peepholes=peepholes)
        if verify:
            sizes = (1, example_inputs[0].shape[0] + 2) if dynamic_batch else (example_inputs[0].shape[0],)
            report.checks += [_check_batch(model, session, _batched(example_inputs, size), atol, rtol)
                              for size in sizes]
    finally:
        model.train(was_training)
    if report.random_ops or (verify and not report.ok):
        raise ExportVerificationError(f"ONNX export failed verification: {report}", report)
    return path, report
