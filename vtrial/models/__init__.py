"""Model definitions: the base classes and the shipped models."""

from vtrial.models.base import (
    Covariate as Covariate,
    Model as Model,
    Observable as Observable,
    Parameter as Parameter,
    ParameterEvent as ParameterEvent,
    Route as Route,
    State as State,
)
from vtrial.models.pk import one_compartment as one_compartment, two_compartment as two_compartment
