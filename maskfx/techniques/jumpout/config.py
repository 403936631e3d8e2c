"""Jumpout's config: where Jumpout goes and how it drops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from maskfx.config import check_patterns
from maskfx.errors import UserError
from maskfx.techniques.jumpout.layers import check_jumpout_args


@dataclass(frozen=True)
class JumpoutConfig:
    """Where and how Jumpout goes.

    ``placement="relu"`` puts a Jumpout after every rectifier call site, ReLU or ReLU6 (a Dropout
    right after one is replaced, unless ``replace_dropout=False``; other activations, SiLU, GELU
    and the like, are listed as rejected); ``"dropout"`` only replaces the Dropouts the model
    already has right after a rectifier, as in the paper's experiments, and leaves every other
    Dropout as it is (Jumpout's rate is normalised by the share of active rectifier units, which
    means nothing for an input that can be negative; a note names each one kept).

    ``include``/``exclude`` are ``fnmatch`` globs on a site's qualified name: the ReLU module's
    path (``"layer1.0.relu"``) or, for functional ReLUs, the enclosing module's path plus the
    graph node name (``"features.denseblock1.relu_3"``). Empty ``include`` means every site.

    ``sample_rate``, ``normalize_rate`` and ``damped_rescale`` switch Jumpout's modifications
    I, II and III (``maskfx.techniques.jumpout.layers``); off, each behaves as plain dropout does there.
    """

    PLACEMENTS: ClassVar[tuple[str, ...]] = ("relu", "dropout")

    sigma: float = 0.02  # measured, see Jumpout
    p_min: float = 0.01
    p_max: float = 0.6
    max_rate: float = 0.9
    per_sample: bool = False
    sample_rate: bool = True
    normalize_rate: bool = True
    damped_rescale: bool = True
    placement: str = "relu"
    replace_dropout: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_jumpout_args(self.sigma, self.p_min, self.p_max, self.max_rate, per_sample=self.per_sample,
                           sample_rate=self.sample_rate, normalize_rate=self.normalize_rate,
                           damped_rescale=self.damped_rescale, replace_dropout=self.replace_dropout)
        if self.placement not in self.PLACEMENTS:
            raise UserError(f"placement must be one of {self.PLACEMENTS}, got {self.placement!r}")
        if self.placement == "dropout" and not self.replace_dropout:
            raise UserError("replace_dropout=False contradicts placement='dropout' (which only replaces Dropouts)")
        object.__setattr__(self, "include", check_patterns("include", self.include))
        object.__setattr__(self, "exclude", check_patterns("exclude", self.exclude))

    def layer_kwargs(self) -> dict[str, Any]:
        return dict(sigma=self.sigma, p_min=self.p_min, p_max=self.p_max, max_rate=self.max_rate,
                    per_sample=self.per_sample, sample_rate=self.sample_rate,
                    normalize_rate=self.normalize_rate, damped_rescale=self.damped_rescale)
