"""Layer 1, models: what an animal or a well is, and the registry of every shipped model.

A model is one file (states, parameters with units, ranges and sources, routes,
observables with units, the endpoints and report panels it declares, one right-hand side)
plus one line in `REGISTRY`; nothing else in vtrial needs to change for a new model. A
user's own model file (`file.py:factory`) or an installed package's entry point loads
through the same loader (`vtrial.models.loader.load_model`).
"""

from vtrial.models.base import (
    Covariate as Covariate,
    Endpoint as Endpoint,
    Model as Model,
    Observable as Observable,
    Panel as Panel,
    Parameter as Parameter,
    ParameterEvent as ParameterEvent,
    Route as Route,
    State as State,
    standard_endpoints as standard_endpoints,
)
from vtrial.models.alphavirus_bone_mouse import alphavirus_bone_mouse as alphavirus_bone_mouse
from vtrial.models.ami_mouse import ami_mouse as ami_mouse
from vtrial.models.binding import il1r_binding as il1r_binding
from vtrial.models.caf_tslp_mouse import caf_tslp_mouse as caf_tslp_mouse
from vtrial.models.caf_tslp_well import caf_tslp_well as caf_tslp_well
from vtrial.models.cia_rat import cia_rat as cia_rat
from vtrial.models.loader import check_model as check_model, load_model as load_model
from vtrial.models.functional_well import functional_model as functional_model
from vtrial.models.msu_peritonitis_mouse import msu_peritonitis_mouse as msu_peritonitis_mouse
from vtrial.models.pbmc_well import pbmc_model as pbmc_model
from vtrial.models.pk import one_compartment as one_compartment, two_compartment as two_compartment
from vtrial.models.renal_nmp_pig import renal_nmp_pig as renal_nmp_pig

#: Every shipped model: the name a config uses, and the factory that builds it.
REGISTRY = {
    "cia_rat": cia_rat,
    "one_compartment": lambda: one_compartment(),
    "one_compartment_absorption": lambda: one_compartment(absorption=True),
    "two_compartment": lambda: two_compartment(),
    "two_compartment_absorption": lambda: two_compartment(absorption=True),
    "il1r_binding": il1r_binding,
    "il1_functional": functional_model,
    "pbmc_lps": pbmc_model,
    "msu_peritonitis_mouse": msu_peritonitis_mouse,
    "ami_mouse": ami_mouse,
    "alphavirus_bone_mouse": lambda: alphavirus_bone_mouse("rrv"),
    "alphavirus_bone_mouse_chikv": lambda: alphavirus_bone_mouse("chikv"),
    "renal_nmp_pig": renal_nmp_pig,
    "caf_tslp_mouse": caf_tslp_mouse,
    "caf_tslp_well": caf_tslp_well,
}


def get_model(name: str) -> Model:
    """The model called `name`: a registry name, an entry point or `file.py:factory`
    (relative to the current folder); one instance per reference, so it compiles once.
    See `load_model`."""
    return load_model(name)
