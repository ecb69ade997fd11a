"""What ``fastconv profile`` produces (one :class:`Claim` per row) and the sizes it uses."""
from __future__ import annotations

from dataclasses import dataclass, field

PASS, FAIL, INFO, SKIP = "PASS", "FAIL", "INFO", "SKIP"


@dataclass
class Claim:
    """One of the chapter's claims, with what was counted, measured and concluded.

    ``verdict`` is computed from the measured numbers (PASS/FAIL against the
    stated criterion), INFO for a measurement with no criterion, SKIP when a
    needed backend is missing.  ``data`` holds the raw numbers (JSON and
    plots); ``plots`` the PNG files written for it.
    """

    key: str
    title: str
    claim: str
    counted: str
    measured: str
    verdict: str
    criterion: str = ""
    detail: str = ""
    data: dict = field(default_factory=dict)
    plots: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "claim": self.claim,
                "counted": self.counted, "measured": self.measured, "verdict": self.verdict,
                "criterion": self.criterion, "detail": self.detail, "data": self.data,
                "plots": self.plots}


@dataclass(frozen=True)
class Sweep:
    """Kernel widths ``widths`` on a ``n**d`` input, 'same' padding (fixed output size)."""

    d: int
    n: int
    widths: tuple
    fit_from: int  # smallest width used to fit the log-log slope (asymptotic regime)


@dataclass(frozen=True)
class Preset:
    """Sizes and time budgets of one profile run."""

    name: str
    budget: float             # seconds of repeats per timing point (fastest of >= 3)
    cap: float                # a backend slower than this stops its sweep (seconds)
    sweeps: tuple             # Sweep per dimensionality d = 1, 2, 3
    separable: Sweep          # rank-1 kernels, wide width range
    fft_fixed: tuple          # ((d, padded size L, widths <= L / 2), ...): 'full' output
    fft_sizes: tuple          # (kernel width, signal lengths): O(n log n) in the signal
    dense_shape: tuple        # the downscaled image the dense layer is timed on
    memory: tuple             # ((d, n, widths), ...) for the im2col blow-up
    pooling_shape: tuple      # the photograph's size in the pooling experiment
    backends: tuple = ("direct", "im2col", "fft", "separable")  # timed in the width sweeps


PRESETS = {
    "tiny": Preset(
        "tiny", budget=0.0, cap=0.05,
        sweeps=(Sweep(1, 512, (3, 9, 33), 3), Sweep(2, 24, (3, 5, 7), 3),
                Sweep(3, 8, (3, 5), 3)),
        separable=Sweep(2, 32, (3, 9, 17), 3),
        fft_fixed=((1, 1024, (3, 33, 129)),), fft_sizes=(9, (512, 1024, 2048)),
        dense_shape=(8, 10), memory=((1, 256, (3, 9)), (2, 16, (3, 5)), (3, 8, (3,))),
        pooling_shape=(48, 40)),
    "quick": Preset(
        "quick", budget=0.03, cap=0.1, backends=("direct", "fft", "separable"),
        # fits start where the multiply-adds dominate the per-call and per-row costs
        sweeps=(Sweep(1, 32768, (3, 5, 9, 17, 33, 65, 129, 257, 513, 1025), 17),
                Sweep(2, 384, (3, 5, 7, 9, 11, 15, 21, 31, 45), 15),
                Sweep(3, 32, (3, 5, 7, 9, 11, 13), 7)),
        separable=Sweep(2, 512, (5, 9, 17, 33, 65, 129), 17),
        fft_fixed=((1, 1 << 16, (3, 17, 65, 257, 1025, 4097)),
                   (2, 256, (3, 9, 17, 33, 65, 129))),
        fft_sizes=(33, tuple(1 << k for k in range(16, 23))),
        dense_shape=(56, 64), memory=((1, 4096, (3, 9, 33)), (2, 128, (3, 5, 7, 9)),
                                      (3, 24, (3, 5, 7))),
        pooling_shape=(300, 256)),
    "full": Preset(
        "full", budget=0.2, cap=2.0,
        sweeps=(Sweep(1, 1 << 17, (3, 5, 9, 17, 33, 65, 129, 257, 513, 1025, 2049), 17),
                Sweep(2, 384, (3, 5, 7, 9, 11, 15, 21, 31, 45, 63), 5),
                Sweep(3, 48, (3, 5, 7, 9, 11, 13, 17), 3)),
        separable=Sweep(2, 1024, (5, 9, 17, 33, 65, 129, 257), 9),
        fft_fixed=((1, 1 << 18, (3, 17, 65, 257, 1025, 4097, 16385)),
                   (2, 512, (3, 9, 17, 33, 65, 129, 257)),
                   (3, 64, (3, 5, 9, 17, 33))),
        fft_sizes=(33, tuple(1 << k for k in range(16, 25))),
        dense_shape=(70, 80), memory=((1, 16384, (3, 9, 33, 129)),
                                      (2, 256, (3, 5, 7, 9, 11)), (3, 32, (3, 5, 7, 9))),
        pooling_shape=(600, 512)),
}
