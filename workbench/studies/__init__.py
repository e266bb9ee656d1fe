"""The studies behind the notebooks, one module per question.

floor.py (the bandwidth floor) is shared; kernels.py (04), latency.py (05), grid.py (03),
answers.py (02's answer statistics), decode_modes.py and proofs.py (fast decode modes and their
equality with eager), breakdown.py (where a step's time goes), overhead.py (what measuring costs).
A study that a notebook runs takes one config dataclass (`KernelStudyConfig`, `LatencyStudyConfig`,
`DecodingGridConfig`) and returns a result that builds its own headline.
"""

from . import answers, decode_modes, floor, grid, kernels, latency, overhead
from .breakdown import StepBreakdown, profile_decode
from .grid import DecodingGridConfig, decoding_grid
from .kernels import KernelStudyConfig, run_kernel_study
from .latency import LatencyStudyConfig, run_latency_study
from .proofs import ModeEquality, prove_equal

__all__ = ["DecodingGridConfig", "KernelStudyConfig", "LatencyStudyConfig", "ModeEquality", "StepBreakdown",
           "answers", "decode_modes", "decoding_grid", "floor", "grid", "kernels", "latency", "overhead",
           "profile_decode", "prove_equal", "run_kernel_study", "run_latency_study"]
