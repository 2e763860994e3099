"""Censored observations (CENS/BLQ/LLOQ): Beal's M3/M4 likelihood in the Laplace objective,
the dataset reader, the config checks and the outputs.

Independent checks: the per-observation terms against scipy's normal distribution; a
one-subject objective against the Laplace approximation computed here (scipy's optimiser
and a finite-difference Hessian of the closed-form model) and against the marginal
likelihood integrated numerically over eta (scipy's quad); without censored rows the
objective is the ordinary one, exactly.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats
from typer.testing import CliRunner

import vtrial
import vtrial.analysis.fit_plots
from vtrial.cli import app
from vtrial.design.dosing import Bolus, Regimen, lower_regimens
from vtrial.design.population import ResidualError
from vtrial.estimation import EstimationSpec, PopulationData, population_objective
from vtrial.estimation.censoring import observation_terms, resolve_censoring
from vtrial.estimation.focei import problem
from vtrial.estimation.population import prepare_problem
from vtrial.io.covariate_search import toml_text
from vtrial.io.nonmem import read_nonmem
from vtrial.models import one_compartment

from conftest import REPO_ROOT

LOG_2PI = math.log(2 * math.pi)
MODEL = one_compartment()  # i.v. bolus: C = D / V exp(-CL/V t)
TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0])
DOSE, CL, V, OMEGA2, ADD, PROP = 10.0, 0.4, 2.5, 0.09, 0.1, 0.1
#: 1 below the limit in DV, -1 above an upper limit in DV.
CENS = np.array([0, -1, 0, 0, 0, 1, 1])
DV = np.where(CENS == 1, 0.6, np.where(CENS == -1, 3.0, [4.4, 3.0, 3.6, 2.6, 1.2, 0.5, 0.2]))
SPEC = EstimationSpec(typical={"cl": CL, "v": V}, omega2={"cl": OMEGA2},
                      residual={"conc_mg_per_l": ResidualError(additive=ADD, proportional=PROP)})


def one_subject(dv=DV, cens=CENS) -> PopulationData:
    n = TIMES.size
    return PopulationData(
        ids=np.array([1]), doses=lower_regimens(MODEL, [Regimen((Bolus(DOSE, unit="mg"),))]), obs_time_h=TIMES[None],
        obs_observable=np.zeros((1, n), int), dv=np.asarray(dv, float)[None], obs_mask=np.ones((1, n), bool), covariates={},
        dv_scale=np.array([1.0]), obs_row=np.arange(n)[None] + 2, cens=None if cens is None else np.asarray(cens)[None],
    )


def terms_scipy(dv, f, v, cens, m4=False):
    sd = np.sqrt(v)
    z = (dv - f) / sd
    out = np.where(cens == 0, (dv - f) ** 2 / v + np.log(v),
                   np.where(cens == 1, -2 * stats.norm.logcdf(z), -2 * stats.norm.logcdf(-z)))
    if m4:
        pos = stats.norm.logcdf(f / sd)
        below = -2 * (np.log(stats.norm.cdf(z) - stats.norm.cdf(-f / sd)) - pos)
        out = np.where(cens == 1, below, out + 2 * pos)
    return out


def test_observation_terms_match_scipy():
    rng = np.random.default_rng(0)
    f = rng.uniform(0.05, 5.0, 60)
    v = rng.uniform(0.01, 0.5, 60)
    dv = f + rng.normal(0, 1.5, 60) * np.sqrt(v)
    dv = np.where(dv > 0, dv, 0.01)
    cens = rng.choice([-1, 0, 1], 60)
    for method, m4 in (("m3", False), ("m4", True)):
        got = np.asarray(observation_terms(jnp.asarray(dv), jnp.asarray(f), jnp.asarray(v), jnp.asarray(cens), method))
        np.testing.assert_allclose(got, terms_scipy(dv, f, v, cens, m4), rtol=1e-10, atol=1e-10)


def test_without_censored_rows_the_per_observation_terms_are_the_ordinary_ones_exactly():
    """The objective depends on the observations only through `Problem._phi` and its
    derivatives in f: with no row censored the M3/M4 path gives them bit for bit."""
    prep = prepare_problem(MODEL, one_subject(cens=None), SPEC, "laplace", vtrial.SolverOptions())
    from vtrial.estimation.population_spec import unpack

    u = unpack(prep.layout, prep.constants, jnp.asarray(prep.x0))
    s = jax_first(prep.arrays)
    f = jnp.linspace(0.1, 5.0, s.dv.shape[0])  # the observation axis is padded to its size bucket
    plain = prep.problem._phi_derivatives(u, s, f, None)
    for censoring in ("m3", "m4"):
        censored = problem(MODEL, prep.layout, "laplace", prep.problem.options, prep.problem.t0, None, censoring)
        got = censored._phi_derivatives(u, s, f, None)
        if censoring == "m3":
            for a, b in zip(plain, got):
                assert np.array_equal(np.asarray(a), np.asarray(b))
        else:  # M4 conditions every row on y > 0: the ordinary terms plus 2 log Phi(f / sd)
            sd = np.sqrt(ADD**2 + (PROP * np.asarray(f)) ** 2)
            np.testing.assert_allclose(np.asarray(got[0]) - np.asarray(plain[0]), 2 * stats.norm.logcdf(np.asarray(f) / sd),
                                       rtol=1e-12, atol=1e-12)


def jax_first(arrays):
    import jax

    return jax.tree_util.tree_map(lambda a: a[0], arrays)


def minus_two_log_likelihood_given_eta(eta, dv=DV, cens=CENS):
    """-2 log p(y | eta) + eta^2 / omega^2 (no 2 pi constants), closed form."""
    f = DOSE / V * np.exp(-CL * math.exp(eta) / V * TIMES)
    return float(np.sum(terms_scipy(dv, f, ADD**2 + (PROP * f) ** 2, cens))) + eta**2 / OMEGA2


@pytest.fixture(scope="module")
def one_subject_m3():
    return population_objective(MODEL, one_subject(), SPEC, method="laplace", gradient=False)


def test_one_subject_m3_objective_is_the_laplace_approximation_and_near_the_integrated_likelihood(one_subject_m3):
    r = one_subject_m3
    n_gaussian = int(np.sum(CENS == 0))
    L = minus_two_log_likelihood_given_eta
    best = optimize.minimize_scalar(L, bounds=(-2, 2), method="bounded", options={"xatol": 1e-10})
    h = 1e-4
    hess = (L(best.x + h) - 2 * L(best.x) + L(best.x - h)) / h**2
    laplace = best.fun + math.log(OMEGA2) + math.log(hess / 2) + n_gaussian * LOG_2PI
    assert r.eta[0, 0] == pytest.approx(best.x, abs=1e-6)
    assert r.ofv_with_constant == pytest.approx(laplace, abs=1e-6)
    # -2 log of the marginal likelihood: the integral over eta of p(y | eta) N(eta; 0, omega^2).
    integral, _ = integrate.quad(lambda e: math.exp(-(L(e) - best.fun) / 2) / math.sqrt(2 * math.pi * OMEGA2), -3, 3,
                                 epsabs=1e-13, epsrel=1e-12)
    exact = best.fun - 2 * math.log(integral) + n_gaussian * LOG_2PI
    # Laplace's own error on this posterior (one eta, 7 observations, 3 censored): 0.015.
    assert abs(r.ofv_with_constant - exact) < 0.03


def test_resolve_censoring_needs_laplace_and_names_the_fix():
    data = one_subject()
    assert resolve_censoring(data, None, "laplace") == "m3"
    assert resolve_censoring(data, "m4", "laplace") == "m4"
    assert resolve_censoring(data, "drop", "focei") == "drop"
    assert resolve_censoring(one_subject(cens=None), None, "focei") == "none"
    with pytest.raises(vtrial.SpecError, match=r'estimation.method.*method = "laplace".*censoring = "drop"'):
        resolve_censoring(data, None, "focei")
    with pytest.raises(vtrial.SpecError, match="unknown censoring"):
        resolve_censoring(data, "m5", "laplace")
    with pytest.raises(vtrial.SpecError, match="lower limits"):
        resolve_censoring(one_subject(dv=np.where(CENS == 1, 0.0, DV)), "m4", "laplace")


# -- the dataset reader -------------------------------------------------------------


def _read(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    return read_nonmem(path, MODEL)


def test_reader_cens_column_dv_holds_the_limit(tmp_path):
    data = _read(tmp_path, "ID,TIME,AMT,EVID,MDV,DV,CENS\n1,0,10,1,1,.,0\n1,1,0,0,0,3.1,0\n1,24,0,0,0,0.05,1\n1,30,0,0,0,9,-1\n")
    assert data.cens.tolist() == [[0, 1, -1]]
    assert data.dv.tolist() == [[3.1, 0.05, 9.0]]


def test_reader_lloq_column_blq_rows(tmp_path):
    """Without CENS: DV < LLOQ or DV missing with LLOQ given is BLQ (limit LLOQ); DV = LLOQ is quantified."""
    data = _read(tmp_path, "ID,TIME,AMT,EVID,MDV,DV,LLOQ\n1,0,10,1,1,.,.\n1,1,0,0,0,3.1,0.1\n1,2,0,0,0,0.1,0.1\n"
                           "1,24,0,0,0,0.02,0.1\n1,30,0,0,0,.,0.1\n1,31,0,2,1,.,0.1\n")
    assert data.cens.tolist() == [[0, 0, 1, 1]]
    assert data.dv.tolist() == [[3.1, 0.1, 0.1, 0.1]]


def test_reader_blq_flag_takes_lloq(tmp_path):
    data = _read(tmp_path, "ID,TIME,AMT,EVID,MDV,DV,BLQ,LLOQ\n1,0,10,1,1,.,.,.\n1,1,0,0,0,3.1,0,0.1\n1,24,0,0,0,0,1,0.1\n")
    assert data.cens.tolist() == [[0, 1]] and data.dv.tolist() == [[3.1, 0.1]]


def test_reader_without_censoring_columns_has_no_cens(tmp_path):
    assert _read(tmp_path, "ID,TIME,AMT,EVID,MDV,DV\n1,0,10,1,1,.\n1,1,0,0,0,3.1\n").cens is None


@pytest.mark.parametrize("text,row,column,rule", [
    ("ID,TIME,AMT,EVID,MDV,DV,CENS\n1,0,10,1,1,.,0\n1,1,0,0,0,3,2\n", 2, "CENS", "not a censoring flag"),
    ("ID,TIME,AMT,EVID,MDV,DV,BLQ\n1,0,10,1,1,.,0\n1,1,0,0,0,3,-1\n", 2, "BLQ", "not a censoring flag"),
    ("ID,TIME,AMT,EVID,MDV,DV,CENS\n1,0,10,1,1,.,0\n1,1,0,0,0,.,1\n", 2, "DV", "needs its limit"),
    ("ID,TIME,AMT,EVID,MDV,DV,CENS,BLQ\n1,0,10,1,1,.,0,0\n1,1,0,0,0,3,0,0\n", None, "BLQ", "both CENS and BLQ"),
], ids=["cens-value", "blq-value", "no-limit", "both-flags"])
def test_reader_bad_censoring_names_row_and_column(tmp_path, text, row, column, rule):
    with pytest.raises(vtrial.DataError, match=rule) as e:
        _read(tmp_path, text)
    assert e.value.column == column and e.value.row == (None if row is None else row)


# -- vtrial check: the censoring config against the dataset ---------------------------

BOLUS_FIT = tomllib.loads((REPO_ROOT / "configs" / "bolus_2cpt_fit.toml").read_text())
CENSORED_ROWS = "ID,TIME,AMT,EVID,CMT,DV,MDV,CENS\n1,0,120000,1,1,.,1,0\n1,0.25,0,0,1,1040.7,0,0\n1,24,0,0,1,50,0,1\n" \
                "2,0,60000,1,1,.,1,0\n2,0.25,0,0,1,500.5,0,0\n2,24,0,0,1,50,0,1\n"


def _fit_table(**estimation):
    table = copy.deepcopy(BOLUS_FIT)
    table["estimation"].update(estimation)
    return table


def test_check_refuses_m3_with_focei_naming_the_fix(tmp_path):
    path = tmp_path / "cens.csv"
    path.write_text(CENSORED_ROWS)
    with pytest.raises(vtrial.SpecError, match=r"2 censored observation.*method = \"laplace\""):
        vtrial.check_config(_fit_table(), data=path)
    summary = vtrial.check_config(_fit_table(method="laplace"), data=path)
    assert (summary["censoring"], summary["n_censored"], summary["n_observations"]) == ("m3", 2, 4)
    assert vtrial.check_config(_fit_table(censoring="drop"), data=path)["censoring"] == "drop"
    with pytest.raises(vtrial.SpecError, match="estimation.censoring"):
        vtrial.check_config(_fit_table(censoring="m5"), data=path)
    config = tmp_path / "fit.toml"
    config.write_text(toml_text(_fit_table()))
    result = CliRunner().invoke(app, ["check", str(config), "--data", str(path)])
    assert result.exit_code == 2 and "laplace" in " ".join(result.output.split())


# -- outputs: VPC with the share below the LLOQ, GOF marking censored rows -----------


def test_vpc_table_censors_the_simulations_and_reports_the_share_below_lloq():
    rng = np.random.default_rng(1)
    n, reps = 40, 200
    time = np.repeat([1.0, 8.0], n // 2)
    truth = np.where(time == 1.0, 5.0, 0.6)
    sims = truth[None] * np.exp(rng.normal(0, 0.5, (reps, n)))
    dv = truth * np.exp(rng.normal(0, 0.5, n))
    lloq = 0.5
    cens = (dv < lloq).astype(int)
    dv = np.where(cens == 1, lloq, dv)
    table = vtrial.analysis.fit_plots.vpc_table(np.zeros(n, int), time, dv, sims, ["c"], cens=cens)
    late = table[(table.time == 8.0) & (table.percentile == 50.0)].iloc[0]
    assert late.lloq == lloq and late.blq_observed == pytest.approx(np.mean(cens[time == 8.0]))
    share = np.mean(sims[:, time == 8.0] < lloq, axis=1)
    assert late.blq_sim_median == pytest.approx(np.percentile(share, 50))
    assert late.blq_sim_low <= late.blq_observed <= late.blq_sim_high
    early = table[(table.time == 1.0)]
    assert (early.blq_observed == 0).all() and np.isfinite(early.observed).all()
    # The 5th percentile of the late bin lies among the censored values (share > 5%): missing.
    fifth = table[(table.time == 8.0) & (table.percentile == 5.0)].iloc[0]
    assert np.isnan(fifth.observed) and np.isnan(fifth.sim_median)
    # Without censoring the table keeps its columns and numbers.
    plain = vtrial.analysis.fit_plots.vpc_table(np.zeros(n, int), time, dv, sims, ["c"])
    assert "lloq" not in plain and np.isfinite(plain.observed).all()


def test_gof_and_vpc_plots_draw_censored_rows(tmp_path):
    from vtrial.analysis.fit_plots import plot_gof, plot_vpc, vpc_table

    predictions = pd.DataFrame({"observable": ["c"] * 4, "TIME": [1.0, 2.0, 8.0, 24.0], "DV": [3.0, 2.0, 1.0, 0.5],
                                "PRED": [2.9, 2.1, 0.9, 0.3], "IPRED": [3.0, 2.0, 1.0, 0.4],
                                "CWRES": [0.1, -0.2, 0.3, np.nan], "CENS": [0, 0, 0, 1]})
    fig = plot_gof(predictions)
    assert any("censored" in t.get_label() for ax in fig.axes for t in ax.collections)
    table = vpc_table(np.zeros(4, int), predictions.TIME.to_numpy(), predictions.DV.to_numpy(),
                      np.tile(predictions.DV.to_numpy(), (20, 1)), ["c"], cens=predictions.CENS.to_numpy())
    fig = plot_vpc(table, points=pd.DataFrame({"observable": "c", "time": predictions.TIME, "dv": predictions.DV,
                                               "cens": predictions.CENS}))
    assert len(fig.axes) == 2 and "below the LLOQ" in fig.axes[1].get_title()
    fig.savefig(tmp_path / "vpc.png")


# -- simulation-estimation: M3 against dropping the censored rows (long) ---------------

ORAL_FIT = """kind = "fit"
name = "censored_oral"
model = "one_compartment_absorption"
[parameters]
ka = 1.3
cl = 0.4
v = 2.5
[variability.omega]
cl = 0.2
v = 0.2
[residual.conc_mg_per_l]
additive = 0.1
proportional = 0.2
[data.routes]
oral = [1]
[estimation]
method = "laplace"
covariance = "{covariance}"
{censoring}
[vpc]
replicates = {replicates}
"""


def censored_oral_study(tmp_path, n=30, lloq=0.8, seed=3):
    """`n` subjects, oral 10 mg, 7 samples to 24 h (one-compartment, closed form), CV 30% on
    CL and V, 0.05 mg/L + 15% error; samples below `lloq` censored (CENS = 1, DV = LLOQ):
    about 30%. Writes the censored dataset and the uncensored one; returns their paths,
    the share censored and the drawn individual parameters."""
    import jax
    import jax.numpy as jnp

    from vtrial.design.population import Population
    from vtrial.engine.runner import simulate_population

    model = vtrial.models.get_model("one_compartment_absorption")
    times = np.array([0.5, 1, 2, 4, 8, 12, 24.0])
    residual = ResidualError(additive=0.05, proportional=0.15)
    pop = Population.build(model, typical={"ka": 1.0, "cl": 0.5, "v": 2.0}, omega2={"cl": 0.09, "v": 0.09},
                           residual={"conc_mg_per_l": residual})
    params = pop.sample(jax.random.PRNGKey(seed), n)
    doses = lower_regimens(model, [Regimen((Bolus(10.0, unit="mg", route="oral"),))] * n)
    conc = simulate_population(model, params, doses, times, states=False).observables["conc_mg_per_l"]
    dv = np.asarray(residual.sample(jax.random.PRNGKey(seed + 1), jnp.asarray(conc)))
    cens = (dv < lloq).astype(int)
    paths = {}
    for name, censored in (("censored", True), ("full", False)):
        lines = ["ID,TIME,AMT,EVID,CMT,DV,MDV" + (",CENS" if censored else "")]
        for i in range(n):
            lines.append(f"{i + 1},0,10,1,1,.,1" + (",0" if censored else ""))
            for t, y, c in zip(times, dv[i], cens[i]):
                value = lloq if (censored and c) else y
                lines.append(f"{i + 1},{t:g},0,0,1,{float(value)!r},0" + (f",{c}" if censored else ""))
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths, float(cens.mean()), params


def _cli_fit(tmp_path, data, name, *, censoring="", covariance="none", replicates=0):
    config = tmp_path / f"{name}.toml"
    config.write_text(ORAL_FIT.format(censoring=censoring, covariance=covariance, replicates=replicates))
    out = tmp_path / name
    result = CliRunner().invoke(app, ["fit", str(config), str(data), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    estimates = pd.read_csv(out / "parameters.csv").set_index("name")["estimate"]
    return out, estimates, json.loads((out / "fit.json").read_text())


@pytest.mark.long
def test_m3_recovers_what_dropping_biases(tmp_path):
    """30% of the samples below the LLOQ: M3 (Laplace) estimates what the uncensored data
    estimate; dropping the censored rows (M1) biases CL down and V and KA up (the late,
    low concentrations go missing). The M3 fit runs through `vtrial fit`, outputs included."""
    paths, share, params = censored_oral_study(tmp_path)
    assert 0.2 <= share <= 0.4
    _, full, _ = _cli_fit(tmp_path, paths["full"], "full")
    out, m3, facts = _cli_fit(tmp_path, paths["censored"], "m3", covariance="sandwich", replicates=50)
    _, drop, drop_facts = _cli_fit(tmp_path, paths["censored"], "drop", censoring='censoring = "drop"')
    assert (facts["censoring"], facts["n_censored"], facts["covariance_step"]) == ("m3", round(share * 210), "ok")
    assert drop_facts["censoring"] == "drop" and any("drop" in w for w in drop_facts["warnings"])
    for p in ("ka", "cl", "v"):
        assert abs(m3[p] / full[p] - 1) < 0.03, (p, m3[p], full[p])
        assert abs(drop[p] / full[p] - 1) > 0.08, (p, drop[p], full[p])
    assert drop["cl"] < full["cl"] and drop["v"] > full["v"]
    # ... and the truth drawn: geometric means of the subjects' CL and V (ka has no variability).
    for p in ("cl", "v"):
        drawn = float(np.exp(np.mean(np.log(np.asarray(params[p])))))
        assert abs(m3[p] / drawn - 1) < 0.1, (p, m3[p], drawn)
    predictions = pd.read_csv(out / "predictions.csv")
    censored = predictions[predictions.CENS == 1]
    assert len(censored) == facts["n_censored"] and censored.CWRES.isna().all() and censored.IPRED.notna().all()
    assert predictions[predictions.CENS == 0].CWRES.notna().all()
    vpc = pd.read_csv(out / "vpc.csv")
    late = vpc[vpc.time == 24.0].iloc[0]
    assert late.blq_observed > 0.5 and late.blq_sim_low <= late.blq_observed <= late.blq_sim_high
    assert (out / "vpc.png").is_file() and (out / "gof.png").is_file()


@pytest.mark.long
@pytest.mark.parametrize("censoring", ["m3", "m4"])
def test_censored_objective_gradient_matches_central_differences(censoring):
    """The exact gradient (third derivatives of the censored terms through the expansion,
    the implicit derivative of the EBE) against central differences of the objective."""
    data = one_subject()
    base = population_objective(MODEL, data, SPEC, method="laplace", censoring=censoring)
    h = 1e-5
    for k, name in enumerate(base.x_names):
        step = np.zeros_like(base.x)
        step[k] = h
        up = population_objective(MODEL, data, SPEC, method="laplace", censoring=censoring, x=base.x + step, eta=base.eta)
        down = population_objective(MODEL, data, SPEC, method="laplace", censoring=censoring, x=base.x - step, eta=base.eta)
        assert base.gradient[k] == pytest.approx((up.ofv - down.ofv) / (2 * h), rel=1e-5, abs=1e-6), name


def test_individual_fits_refuse_censored_rows():
    with pytest.raises(vtrial.DataError, match="censored observations"):
        vtrial.estimation.fit_individuals(MODEL, one_subject(), SPEC)
