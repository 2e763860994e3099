"""Inter-occasion variability (issue 24, item 2): an OCC column and `[variability.occasions]`
give one kappa per occasion and subject sharing one variance (NONMEM's BLOCK(1) SAME).

Data are written here from a closed-form one-compartment oral model whose clearance
changes at the occasions' boundaries, NONMEM's way (next observation carried back: a
record's occasion holds for the interval that ends at it), propagated by hand segment by
segment: an independent check of the solve's parameter changes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vtrial.design.population import ResidualError
from vtrial.errors import DataError, SpecError
from vtrial.estimation import EstimationSpec, fit_population, population_objective
from vtrial.estimation.occasions import occasions_from_rows
from vtrial.io.fit_config import BuiltFit, FitConfig
from vtrial.io.nonmem import read_nonmem
from vtrial.models import one_compartment

MAPPING = {"routes": {"oral": [1]}}
OBS_AFTER_DOSE = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0)


def _propagate(depot, central, ka, ke, dt):
    """Closed-form one-compartment oral amounts after `dt` with constant ka, ke."""
    ed, ec = math.exp(-ka * dt), math.exp(-ke * dt)
    return depot * ed, central * ec + ka * depot / (ka - ke) * (ec - ed)


def write_dataset(path, *, n=6, dose_times=(0.0, 48.0), cl=0.1, v=1.0, ka=1.0, omega2=0.09, pi2=0.04, prop=0.1,
                  seed=1, dose=10.0, late_level_for_first=False, obs_after=OBS_AFTER_DOSE):
    """A dataset of `n` subjects, one occasion per dose (OCC 1, 2, ...), observed at
    `obs_after` each dose, simulated exactly with CL_ik = cl exp(eta_i + kappa_ik).
    `late_level_for_first`: subject 1 gets one more row after its last observation in
    an occasion level nobody else has (a level without data)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        eta = rng.normal(0.0, math.sqrt(omega2))
        kappa = rng.normal(0.0, math.sqrt(pi2), len(dose_times))
        records = []
        for k, t_dose in enumerate(dose_times):
            records.append(dict(ID=i, TIME=t_dose, AMT=dose, EVID=1, MDV=1, CMT=1, DV=0.0, OCC=k + 1))
            records += [dict(ID=i, TIME=t_dose + t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=0.0, OCC=k + 1) for t in obs_after]
        # NONMEM's NOCB: advancing to a record uses that record's occasion.
        depot = central = 0.0
        t_prev = 0.0
        for r in records:
            ke = cl * math.exp(eta + kappa[r["OCC"] - 1]) / v
            depot, central = _propagate(depot, central, ka, ke, r["TIME"] - t_prev)
            t_prev = r["TIME"]
            if r["EVID"] == 1:
                depot += r["AMT"]
            else:
                r["DV"] = central / v * (1.0 + prop * rng.normal())
        rows += records
        if late_level_for_first and i == 1:
            rows.append(dict(ID=i, TIME=t_prev + 1.0, AMT=0.0, EVID=2, MDV=1, CMT=2, DV=0.0, OCC=len(dose_times) + 1))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def spec(**kw) -> EstimationSpec:
    return EstimationSpec(typical={"cl": 0.1, "v": 1.0, "ka": 1.0}, omega2={"cl": 0.09},
                          residual={"conc_mg_per_l": ResidualError(proportional=0.1)}, **kw)


@pytest.fixture(scope="module")
def model():
    return one_compartment(absorption=True)


# -- data and config (no compilation) ------------------------------------------------------


def test_occasions_change_at_the_record_before_them():
    """NONMEM's next observation carried back: OCC 2 starts at the time of the last row of
    OCC 1 (its parameters drive the advance to OCC 2's first record)."""
    subject = np.array([0, 0, 0, 0, 1, 1])
    time_h = np.array([0.0, 4.0, 48.0, 52.0, 0.0, 4.0])
    occ = np.array([1, 1, 2, 2, 1, 1])
    obs_rows = np.array([1, 3, 5])
    o = occasions_from_rows(subject, time_h, occ, obs_rows, (2, 2))
    assert o.levels.tolist() == [1, 2]
    assert o.change_h[0].tolist() == [-math.inf, 4.0]
    assert o.change_level[0].tolist() == [0, 1]
    assert o.change_level[1].tolist() == [0, 0]  # padded by repeating its only change
    assert o.obs_level.tolist() == [[0, 1], [0, -1]]


def test_dataset_occasions_are_read(tmp_path, model):
    data = read_nonmem(write_dataset(tmp_path / "d.csv", n=2), model, MAPPING)
    assert data.occasions.levels.tolist() == [1, 2]
    assert data.occasions.change_h[:, 1].tolist() == [12.0, 12.0]
    renamed = pd.read_csv(tmp_path / "d.csv").rename(columns={"OCC": "VISIT"})
    renamed.to_csv(tmp_path / "v.csv", index=False)
    assert read_nonmem(tmp_path / "v.csv", model, {**MAPPING, "occasion": "VISIT"}).occasions.levels.tolist() == [1, 2]
    assert read_nonmem(tmp_path / "v.csv", model, MAPPING).occasions is None
    with pytest.raises(DataError, match="OCC.*column missing"):
        read_nonmem(tmp_path / "v.csv", model, {**MAPPING, "occasion": "OCC"})
    blank = pd.read_csv(tmp_path / "d.csv").astype({"OCC": object})
    blank.loc[3, "OCC"] = "."
    blank.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="row 4 .*column OCC: every row needs an occasion"):
        read_nonmem(tmp_path / "b.csv", model, {**MAPPING, "occasion": "OCC"})
    assert read_nonmem(tmp_path / "b.csv", model, MAPPING).occasions is None  # an OCC column not for occasions


def test_iov_config_is_checked(tmp_path, model):
    base = {"model": "one_compartment_absorption", "parameters": {"cl": 0.1, "v": 1.0, "ka": 1.0},
            "variability": {"omega": {"cl": 0.09}}, "residual": {"conc_mg_per_l": {"proportional": 0.1}}}
    built = BuiltFit(FitConfig.model_validate({**base, "variability": {"omega": {"cl": 0.09}, "occasions": {"cl": 0.04}},
                                               "fixed": ["iov_omega2_cl"]}))
    assert built.estimation_spec().iov_omega2 == {"cl": 0.04}
    with pytest.raises(SpecError, match="variability.occasions.k12: not a parameter"):
        BuiltFit(FitConfig.model_validate({**base, "variability": {"omega": {"cl": 0.09}, "occasions": {"k12": 0.04}}}))
    with pytest.raises(SpecError, match="variability.occasions.alag: alag is a dose route's"):
        BuiltFit(FitConfig.model_validate({**base, "variability": {"omega": {"cl": 0.09}, "occasions": {"alag": 0.04}}}))
    with pytest.raises(SpecError, match="variability.occasions.cl: initial variance must lie in"):
        BuiltFit(FitConfig.model_validate({**base, "variability": {"omega": {"cl": 0.09}, "occasions": {"cl": 50.0}}}))
    data = read_nonmem(write_dataset(tmp_path / "d.csv", n=2), model, MAPPING)
    with pytest.raises(SpecError, match="variability.occasions: the dataset has no occasions"):
        population_objective(model, data._replace(occasions=None), spec(iov_omega2={"cl": 0.04}), gradient=False)


# -- the objective (compiles the occasion problem: long) --------------------------------------


@pytest.mark.long
@pytest.mark.parametrize("method", ["focei", "foce", "laplace", "fo"])
def test_iov_of_zero_variance_is_the_fit_without_iov(tmp_path, model, method):
    """One occasion per dose, the IOV variance fixed to ~0: the OFV is the no-IOV OFV
    (the kappas' prior and log-determinant terms cancel; what is left is O(pi^2))."""
    n = 6 if method == "focei" else 3
    data = read_nonmem(write_dataset(tmp_path / "d.csv", n=n), model, MAPPING)
    plain = population_objective(model, data, spec(), method=method, gradient=False)
    tiny = population_objective(model, data, spec(iov_omega2={"cl": 1e-12}, fixed=("iov_omega2_cl",)), method=method, gradient=False)
    assert tiny.ofv == pytest.approx(plain.ofv, abs=1e-6)
    assert tiny.eta.shape == (n, 1 + 2)  # [eta_cl | kappa_cl of OCC 1, 2]
    if method != "fo":  # FO's etas are 0
        np.testing.assert_allclose(tiny.eta[:, 1:], 0.0, atol=1e-8)
        np.testing.assert_allclose(tiny.eta[:, 0], plain.eta[:, 0], atol=1e-6)


@pytest.mark.long
def test_padding_and_data_free_occasions_change_nothing(tmp_path, model):
    """A third occasion level that only subject 1 has, after its last observation: every
    other subject's third kappa is padding (masked), subject 1's has no data; the OFV,
    its gradient and the real kappas are those of the two-level dataset."""
    two = read_nonmem(write_dataset(tmp_path / "two.csv"), model, MAPPING)
    three = read_nonmem(write_dataset(tmp_path / "three.csv", late_level_for_first=True), model, MAPPING)
    assert three.occasions.levels.tolist() == [1, 2, 3]
    s = spec(iov_omega2={"cl": 0.04})
    a = population_objective(model, two, s)
    b = population_objective(model, three, s)
    assert b.ofv == pytest.approx(a.ofv, abs=1e-9)
    np.testing.assert_allclose(b.gradient, a.gradient, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.eta[:, :3], a.eta, atol=1e-10)
    np.testing.assert_allclose(b.eta[:, 3], 0.0, atol=1e-12)
    # and IOV moves the objective: the data carry occasion-to-occasion variability
    assert a.ofv < population_objective(model, two, spec(), gradient=False).ofv - 1.0


@pytest.mark.long
def test_iov_gradient_matches_central_differences(tmp_path, model):
    data = read_nonmem(write_dataset(tmp_path / "d.csv", n=4), model, MAPPING)
    s = spec(iov_omega2={"cl": 0.04})
    at = population_objective(model, data, s)
    assert at.x_names[-1] == "iov_omega2_cl"
    h = 1e-5
    fd = []
    for i in range(at.x.size):
        ofv = []
        for sign in (1, -1):
            x = at.x.copy()
            x[i] += sign * h
            ofv.append(population_objective(model, data, s, x=x, eta=at.eta, gradient=False).ofv)
        fd.append((ofv[0] - ofv[1]) / (2 * h))
    np.testing.assert_allclose(at.gradient, fd, rtol=1e-4, atol=1e-4)


@pytest.mark.long
def test_simulation_estimation_recovers_omega_and_pi(tmp_path, model):
    """40 subjects x 3 occasions simulated with omega2_cl = 0.09 and pi2_cl = 0.04: FOCE-I
    recovers both (and the typical values) within a few standard errors."""
    truth = dict(cl=0.1, v=1.0, ka=1.0, omega2=0.09, pi2=0.04, prop=0.1)
    data = read_nonmem(write_dataset(tmp_path / "d.csv", n=40, dose_times=(0.0, 48.0, 96.0), seed=7, **truth,
                                     obs_after=(0.5, 2.0, 6.0, 12.0)), model, MAPPING)
    s = EstimationSpec(typical={"cl": 0.15, "v": 1.0, "ka": 1.0}, omega2={"cl": 0.2}, iov_omega2={"cl": 0.1},
                       residual={"conc_mg_per_l": ResidualError(proportional=0.2)})
    fit = fit_population(model, data, s)
    assert fit.converged, fit.warnings
    est, se = fit.estimates, fit.se
    assert est["cl"] == pytest.approx(0.1, rel=0.15)
    assert abs(est["omega2_cl"] - 0.09) < 3 * se["omega2_cl"] + 0.01
    assert abs(est["iov_omega2_cl"] - 0.04) < 3 * se["iov_omega2_cl"] + 0.005
    assert 0.08 < est["conc_mg_per_l.proportional"] < 0.12
    table = fit.to_frame().set_index("name")
    assert table.loc["iov_cv_pct_cl", "estimate"] == pytest.approx(100 * math.sqrt(math.expm1(est["iov_omega2_cl"])))
    individual = fit.individual_frame()
    assert len(individual) == 40 * 3 and list(individual.columns[:4]) == ["ID", "OCC", "eta_cl", "kappa_cl"]
    first = individual[individual["ID"] == 1]
    np.testing.assert_allclose(first["cl"], est["cl"] * np.exp(first["eta_cl"] + first["kappa_cl"]), rtol=1e-10)


# -- simulations: trials and replicate studies ----------------------------------------------


def _iov_population(model, pi2=0.04, start=(0.0, 48.0)):
    from dataclasses import replace

    from vtrial.design.population import Population

    pop = Population.build(model, typical={"cl": 0.1, "v": 1.0, "ka": 1.0}, omega2={"cl": 0.09})
    return replace(pop, iov={"cl": pi2}, occasion_start_h=start)


def _two_doses():
    from vtrial.design.dosing import Bolus, Regimen

    return Regimen((Bolus(10.0, 0.0, route="oral"), Bolus(10.0, 48.0, route="oral")))


def test_trial_draws_one_kappa_per_animal_and_occasion(model):
    """Each animal's occasions change CL to CL_i exp(kappa_k) from each start time on; the
    kappas come from the animal's own key (the same whatever else is drawn) and have the
    population's variance."""
    from vtrial.design.occasions import draw_kappa
    from vtrial.design.trial import prepare_trial

    pop = _iov_population(model)
    inputs = prepare_trial(model, _two_doses(), pop, times_h=[1.0, 50.0], n_animals=2000, seed=3)
    changes = inputs.doses.changes
    assert changes.time_h.shape == (2000, 2) and np.all(changes.time_h == [0.0, 48.0])
    cl = changes.parameters[:, :, model.parameter_names.index("cl")]
    kappa = np.log(cl / inputs.params["cl"][:, None])
    assert np.all(np.isnan(changes.parameters[:, :, model.parameter_names.index("v")]))
    assert np.std(kappa) == pytest.approx(0.2, rel=0.05)
    assert abs(np.corrcoef(kappa[:, 0], kappa[:, 1])[0, 1]) < 0.1
    again = draw_kappa(3, np.zeros(3), np.array([5, 6, 7]), 2, [0.2])[:, :, 0]
    np.testing.assert_allclose(kappa[5:8], again, rtol=1e-12)
    typical = prepare_trial(model, _two_doses(), pop, times_h=[1.0], n_animals=1, typical=True)
    assert typical.doses.changes is None


@pytest.mark.long
def test_trial_with_occasions_matches_closed_form(model):
    """A simulated trial with IOV against the closed form propagated occasion by occasion."""
    from vtrial.design.trial import prepare_trial, simulate

    pop = _iov_population(model, start=(0.0, 30.0))
    times = np.array([1.0, 4.0, 12.0, 30.0, 40.0, 49.0, 60.0])
    kw = dict(times_h=times, n_animals=3, seed=11)
    inputs = prepare_trial(model, _two_doses(), pop, **kw)
    result = simulate(model, _two_doses(), pop, **kw)
    conc = np.asarray(result.solution.observables["conc_mg_per_l"])
    cl_occ = inputs.doses.changes.parameters[:, :, model.parameter_names.index("cl")]
    for a in range(3):
        depot = central = t_prev = 0.0
        expected = []
        events = sorted([(0.0, "dose"), (48.0, "dose"), (30.0, "occ")] + [(t, "obs") for t in times], key=lambda e: (e[0], e[1] != "obs"))
        for t, kind in events:
            ke = cl_occ[a, 0 if t_prev < 30.0 else 1] / 1.0
            depot, central = _propagate(depot, central, 1.0, ke, t - t_prev)
            t_prev = t
            if kind == "dose":
                depot += 10.0
            elif kind == "obs":
                expected.append(central / 1.0)
        np.testing.assert_allclose(conc[a], expected, rtol=1e-8)


def test_written_dataset_reads_back_the_trial_occasions(tmp_path, model):
    """`vtrial run --dataset` writes OCC as the occasion in effect just before each row, so
    that NONMEM's next observation carried back puts the change back at its start time
    (a dose's time)."""
    from vtrial.design.dosing import lower_regimens
    from vtrial.io.nonmem_writer import dataset_columns

    doses = lower_regimens(model, [_two_doses()])
    times = np.array([1.0, 12.0, 48.0, 50.0, 60.0])
    frame = dataset_columns(model, np.array([1]), doses, times, {"conc_mg_per_l": np.ones((1, 5))}, {"conc_mg_per_l": np.ones(5, bool)},
                            {}, occasion_start_h=(0.0, 48.0))
    assert frame["OCC"].tolist() == [1, 1, 1, 1, 1, 2, 2]  # dose 0, obs 1, 12, dose 48, obs 48, obs 50, 60
    frame.to_csv(tmp_path / "d.csv", index=False, na_rep=".")
    occasions = read_nonmem(tmp_path / "d.csv", model, MAPPING).occasions
    assert occasions.change_h[0].tolist() == [-math.inf, 48.0] and occasions.change_level[0].tolist() == [0, 1]


def test_check_reports_occasions(tmp_path, model):
    """`vtrial check --data`: the occasions a fit with IOV finds, or the missing column."""
    from vtrial.jobs import check_config

    write_dataset(tmp_path / "d.csv", n=2)
    pd.read_csv(tmp_path / "d.csv").drop(columns=["OCC"]).to_csv(tmp_path / "none.csv", index=False)
    (tmp_path / "fit.toml").write_text(
        'kind = "fit"\nmodel = "one_compartment_absorption"\n[parameters]\ncl = 0.1\nv = 1.0\nka = 1.0\n'
        '[variability.omega]\ncl = 0.09\n[variability.occasions]\ncl = 0.04\n'
        '[residual.conc_mg_per_l]\nproportional = 0.1\n[data.routes]\noral = [1]\n')
    assert check_config(tmp_path / "fit.toml", data=tmp_path / "d.csv")["occasions"] == 2
    with pytest.raises(SpecError, match="variability.occasions: the dataset has no occasions"):
        check_config(tmp_path / "fit.toml", data=tmp_path / "none.csv")
