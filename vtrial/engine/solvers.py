"""The diffrax solvers a `SolverOptions.solver` names (one table for every solve: an
animal's event segments, the assays' curves and a steady state's dosing interval)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

#: solver name -> the diffrax class of that name
_CLASSES = {"tsit5": "Tsit5", "dopri5": "Dopri5", "dopri8": "Dopri8", "kvaerno3": "Kvaerno3", "kvaerno5": "Kvaerno5"}


class _Solvers(Mapping):
    """name -> diffrax solver class, diffrax imported at the first lookup of a class: a
    process that only runs solves read back from the export cache (`vtrial.engine
    .export_cache`) never traces one and does without diffrax (half a second of imports)."""

    def __getitem__(self, name: str):
        import diffrax

        return getattr(diffrax, _CLASSES[name])

    def __contains__(self, name) -> bool:  # a name check imports nothing
        return name in _CLASSES

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


SOLVERS = _Solvers()

#: Solvers with an implicit (Newton) stage; see `vtrial.engine.runner.batched_solver`.
IMPLICIT_SOLVERS = frozenset({"kvaerno3", "kvaerno5"})
