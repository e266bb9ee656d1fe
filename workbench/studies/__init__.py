"""The studies behind the notebooks, one module per question.

floor.py (the bandwidth floor) is shared; kernels.py (04), latency.py (05), grid.py (03),
answers.py (02's answer statistics), decode_modes.py and proofs.py (fast decode modes and their
equality with eager), breakdown.py (where a step's time goes), overhead.py (what measuring costs).
"""

from .breakdown import StepBreakdown, profile_decode
from .proofs import ModeEquality, prove_equal

__all__ = ["ModeEquality", "StepBreakdown", "profile_decode", "prove_equal"]
