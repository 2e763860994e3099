"""The diffrax solvers a `SolverOptions.solver` names (one table for every solve: an
animal's event segments, the assays' curves and a steady state's dosing interval)."""

from __future__ import annotations

import diffrax as dfx

SOLVERS = {
    "tsit5": dfx.Tsit5,
    "dopri5": dfx.Dopri5,
    "dopri8": dfx.Dopri8,
    "kvaerno3": dfx.Kvaerno3,
    "kvaerno5": dfx.Kvaerno5,
}

#: Solvers with an implicit (Newton) stage; see `vtrial.engine.runner.batched_solver`.
IMPLICIT_SOLVERS = frozenset({"kvaerno3", "kvaerno5"})
