"""A tiny closed-form population dataset with a strong covariate (for the batched-fit,
bootstrap and covariate-search tests): one-compartment i.v. bolus, CL = 0.1 (BW/0.25)^1.0
exp(eta), V = 1 exp(eta), BW spread 0.15-0.45 kg, 5% proportional error."""

from __future__ import annotations

import numpy as np

from vtrial.design.population import ResidualError
from vtrial.engine.events import DoseRecords
from vtrial.estimation import EstimationSpec
from vtrial.estimation.population_data import PopulationData
from vtrial.models.pk import one_compartment

TIMES = np.array([0.5, 2.0, 6.0, 12.0])


def tiny_population(n: int = 10, seed: int = 0, exponent: float = 1.0):
    """(model, data) of `n` subjects; CL depends on body weight `bw` with `exponent`."""
    rng = np.random.default_rng(seed)
    model = one_compartment()
    bw = np.linspace(0.15, 0.45, n)
    cl = 0.1 * (bw / 0.25) ** exponent * np.exp(0.2 * rng.standard_normal(n))
    v = 1.0 * np.exp(0.15 * rng.standard_normal(n))
    dose = 1.0
    conc = dose / v[:, None] * np.exp(-cl[:, None] / v[:, None] * TIMES[None, :])
    dv = conc * (1.0 + 0.05 * rng.standard_normal(conc.shape))
    zeros = np.zeros((n, 1))
    doses = DoseRecords(time_h=zeros.copy(), amount=np.full((n, 1), dose), per_kg=np.zeros((n, 1), int),
                        duration_h=zeros.copy(), route=np.zeros((n, 1), int))
    data = PopulationData(
        ids=np.arange(1, n + 1), doses=doses, obs_time_h=np.tile(TIMES, (n, 1)), obs_observable=np.zeros((n, TIMES.size), int),
        dv=dv, obs_mask=np.ones((n, TIMES.size), bool), covariates={"bw": bw}, dv_scale=np.array([1.0]),
        obs_row=np.arange(n * TIMES.size).reshape(n, TIMES.size) + 2,
    )
    return model, data


def tiny_spec(**kw) -> EstimationSpec:
    return EstimationSpec(typical={"cl": 0.12, "v": 0.9}, omega2={"cl": 0.05, "v": 0.05},
                          residual={"conc_mg_per_l": ResidualError(proportional=0.08)}, **kw)


FIT_CONFIG = """kind = "fit"
name = "tiny"
model = "one_compartment"

[parameters]
cl = 0.12
v = 0.9

[variability.omega]
cl = 0.05
v = 0.05

[residual.conc_mg_per_l]
proportional = 0.08

[data]
amt_unit = "mg"
time_unit = "h"

[data.routes]
iv = [1]

[data.covariates]
bw = "BW"

[estimation]
covariance = "none"

[vpc]
replicates = 0
"""


def write_tiny_files(folder, n: int = 10, seed: int = 0, extra_config: str = ""):
    """The tiny dataset as a NONMEM-style CSV (with a GROUP column, 1 for the first half of
    the subjects) and its fit config; returns (config path, data path)."""
    import pandas as pd

    _, data = tiny_population(n, seed)
    rows = []
    for i in range(n):
        group = 1 if i < n // 2 else 2
        bw = float(data.covariates["bw"][i])
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=1.0, EVID=1, CMT=1, DV=".", MDV=1, BW=bw, GROUP=group))
        for t, dv in zip(TIMES, data.dv[i]):
            rows.append(dict(ID=i + 1, TIME=float(t), AMT=0.0, EVID=0, CMT=1, DV=repr(float(dv)), MDV=0, BW=bw, GROUP=group))
    data_path = folder / "tiny.csv"
    pd.DataFrame(rows).to_csv(data_path, index=False)
    config_path = folder / "tiny_fit.toml"
    config_path.write_text(FIT_CONFIG + extra_config)
    return config_path, data_path
