"""Model definitions: the base classes, the shipped models and their registry."""

from functools import lru_cache

from vtrial.errors import SpecError
from vtrial.models.base import (
    Covariate as Covariate,
    Model as Model,
    Observable as Observable,
    Parameter as Parameter,
    ParameterEvent as ParameterEvent,
    Route as Route,
    State as State,
)
from vtrial.models.cia_rat import cia_rat as cia_rat
from vtrial.models.pk import one_compartment as one_compartment, two_compartment as two_compartment

#: Model names a config may use, and the factory each calls.
REGISTRY = {
    "cia_rat": cia_rat,
    "one_compartment": lambda: one_compartment(),
    "one_compartment_absorption": lambda: one_compartment(absorption=True),
    "two_compartment": lambda: two_compartment(),
    "two_compartment_absorption": lambda: two_compartment(absorption=True),
}


@lru_cache(maxsize=None)
def get_model(name: str) -> Model:
    """The shipped model called `name` (one instance per name, so it compiles once)."""
    if name not in REGISTRY:
        raise SpecError("model", f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]()
