r"""NMP-1: porcine kidney normothermic machine perfusion (NMP) with a 50 mg anakinra bolus.

**A reconstruction, not a published model.** The system is the one of the Artif Organs
2024 paper (doi 10.1111/aor.14909): paired porcine kidneys, 15 min warm ischaemia, 2 h
cold storage, NMP with autologous blood, anakinra or vehicle into the arterial line at
the start. Only its abstract was visible, so every number here is an assumption (source
`A`) of model card NMP-1 (the project's design document for this model) except the 50 mg dose (seed),
K_I and K_L (the shared IL-1RI link, `vtrial.models.il1_link`). The perfusion time
(3 h) is `A*` (the same group's model, J Transl Med 2015;13:207).

**The circuit's own PK.** Ex vivo there is no host: anakinra stays in one well-mixed
volume (perfusate plus kidney interstitium, `v_perf`, L) and leaves only by glomerular
filtration (sieving coefficient `theta`; urine is not recirculated), while filtration
recovers after cold storage. With $A$ the anakinra in the circuit (mg), $C = A/V_{perf}$
(mg/L) and the function-recovery state $g$ (0 to 1):

$$
\begin{aligned}
\dot A &= -\theta\, GFR_{ss}\, g\, C + r_{art}(t), &
\dot g &= (1 - g)/t_g,\; g(0) = 0 \;\Rightarrow\; GFR(t) = GFR_{ss}(1 - e^{-t/t_g}),\\
\dot D &= -k_D D,\; D(0) = 1, &
\dot{IL} &= k_{syn} D - k_{il} IL \quad (\mathrm{pM}),\\
\dot m_j &= k_j\,(1 + S_j D (1 - f_j + f_j f_{sig}) - m_j),\; m_j(0) = 1, &
j &\in \{\mathrm{IL6}, \mathrm{FasL}, \mathrm{ICAM1}\},
\end{aligned}
$$

with $f_{sig}$ the IL-1RI link at $C_{site} = C$ (57.8 nM per mg/L) and $L = IL/1000$
nM; the link's switch `il1r_ko = 1` sets $f_{sig} \equiv 0$ (the card's full-block
reference arm: IL-1RI fully blocked).
The clearance $\theta\,GFR(t)$ changes with time, so this PK is not the engine's
constant-coefficient mammillary form and is integrated with the rest (no `linear_pk`).

Renal function has no path from the drug (the paper found none): RBF
$= RBF_{ss}\, g$, creatinine clearance $= GFR(t)$ per 100 g of kidney, urine output
$= 0.7 \times$ CrCl, FENa constant. Their values are the card's assumptions.

**Assumptions of this implementation** (beyond the card's): the card's $GFR(t)$ is
carried as a seventh state $g$ (observables see states, not time; $g$ is exactly
$1 - e^{-t/t_g}$); RBF recovers with the same time constant as GFR (the card gives
only the steady state); the two kidneys of a pair are one animal's parameters given to
both arms, which a config expresses with `--animals` (independent draws per arm
otherwise; the tests pair them).

References (the labels in this docstring and in the parameters' `source` fields):
[O14] Porcine kidneys, 22 h cold ischaemia, 6 h ex vivo reperfusion with or without Cytosorb (PMC5657103; control RBF 120 +/- 35 mL/min/100 g).
"""

from __future__ import annotations

import jax.numpy as jnp

from vtrial.models.base import Endpoint, Model, Observable, Panel, Parameter, Route, State, standard_endpoints
from vtrial.models.il1_link import NM_PER_MG_PER_L, agonist_ratio, antagonist_ratio, il1_dependent, knockout, link_parameters, signalling_fraction

_INF = float("inf")
#: The transcripts: (state name, label).
TRANSCRIPTS = (("il6", "IL-6"), ("fasl", "Fas ligand"), ("icam1", "ICAM-1"))

PARAMETERS = (
    Parameter("v_perf", 0.6, "L", 1e-9, _INF, "circuit volume (perfusate + autologous blood)", "A"),
    Parameter("gfr_ss", 0.36, "L/h", 0.0, _INF, "GFR at steady state (6 mL/min = 3 mL/min/100 g x 200 g)", "A"),
    Parameter("t_g", 0.5, "h", 1e-9, _INF, "time constant of function recovery after cold storage", "A"),
    Parameter("theta", 0.7, "-", 0.0, 1.0, "glomerular sieving coefficient of anakinra (17 kDa, like myoglobin)", "A"),
    Parameter("k_d", 0.3, "1/h", 0.0, _INF, "decay of the reperfusion injury (DAMP) signal", "A"),
    Parameter("k_syn", 30.0, "pM/h", 0.0, _INF, "IL-1 synthesis per unit DAMP signal", "A (IL-1 peak about 18 pM)"),
    Parameter("k_il", 1.0, "1/h", 0.0, _INF, "IL-1 loss from the interstitium", "A"),
    *link_parameters(tau=10.0, tau_source="A"),
    Parameter("k_il6", 1.0, "1/h", 0.0, _INF, "IL-6 mRNA turnover (t1/2 0.7 h)", "A"),
    Parameter("k_fasl", 0.4, "1/h", 0.0, _INF, "FasL mRNA turnover (t1/2 1.7 h)", "A"),
    Parameter("k_icam1", 0.3, "1/h", 0.0, _INF, "ICAM-1 mRNA turnover (t1/2 2.3 h)", "A"),
    Parameter("s_il6", 60.0, "-", 0.0, _INF, "IL-6 induction by the injury signal", "A (vehicle end fold about 30)"),
    Parameter("s_fasl", 8.0, "-", 0.0, _INF, "FasL induction by the injury signal", "A (vehicle end fold about 4.4)"),
    Parameter("s_icam1", 10.0, "-", 0.0, _INF, "ICAM-1 induction by the injury signal", "A (vehicle end fold about 4.7)"),
    Parameter("f_il6", 0.7, "-", 0.0, 1.0, "IL-1-dependent fraction of IL-6 induction", "A"),
    Parameter("f_fasl", 0.75, "-", 0.0, 1.0, "IL-1-dependent fraction of FasL induction", "A"),
    Parameter("f_icam1", 0.7, "-", 0.0, 1.0, "IL-1-dependent fraction of ICAM-1 induction", "A"),
    Parameter("kidney_mass_g", 200.0, "g", 1e-9, _INF, "kidney mass", "A"),
    Parameter("rbf_ss", 100.0, "mL/min/100 g", 0.0, _INF, "renal blood flow at steady state", "A (120 +/- 35, P[O14])"),
    Parameter("urine_fraction", 0.7, "-", 0.0, _INF, "urine output / creatinine clearance", "A"),
    Parameter("fena", 10.0, "%", 0.0, 100.0, "fractional excretion of sodium", "A"),
)

STATES = (
    State("anakinra", "mg", 0.0, "anakinra in the circuit"),
    State("damp", "-", 1.0, "reperfusion injury (DAMP) signal D"),
    State("il1", "pM", 0.0, "IL-1 in the renal interstitium"),
    State("il6_mrna", "fold", 1.0, "IL-6 mRNA vs the pre-ischaemia biopsy"),
    State("fasl_mrna", "fold", 1.0, "Fas ligand mRNA vs the pre-ischaemia biopsy"),
    State("icam1_mrna", "fold", 1.0, "ICAM-1 mRNA vs the pre-ischaemia biopsy"),
    State("recovery", "-", 0.0, "renal function recovered after cold storage, g = 1 - exp(-t/t_g)"),
)


def perfusate_mg_per_l(y, p):
    """Anakinra in the perfusate (mg/L); the interstitium is taken equal to it."""
    return y[0] / p["v_perf"]


def il1_signal(y, p):
    """The fraction of IL-1 signalling left, f_sig (0 in the full-block arm, `il1r_ko` = 1)."""
    c = antagonist_ratio(perfusate_mg_per_l(y, p), p["k_i"])
    l = agonist_ratio(y[2] / 1000.0, p["k_l"])
    return knockout(signalling_fraction(c, l, p["tau"]), p["il1r_ko"])


def vector_field(t, y, p, rate):
    anakinra, damp, il1, il6, fasl, icam1, recovery = y
    f_sig = il1_signal(y, p)

    def transcript(name, m):
        return p[f"k_{name}"] * (1.0 + p[f"s_{name}"] * damp * il1_dependent(p[f"f_{name}"], f_sig) - m)

    return jnp.stack(
        [
            -p["theta"] * p["gfr_ss"] * recovery * perfusate_mg_per_l(y, p),
            -p["k_d"] * damp,
            p["k_syn"] * damp - p["k_il"] * il1,
            transcript("il6", il6),
            transcript("fasl", fasl),
            transcript("icam1", icam1),
            (1.0 - recovery) / p["t_g"],
        ]
    ) + rate


def _crcl(y, p):
    """Creatinine clearance = GFR(t), mL/min per 100 g of kidney."""
    return p["gfr_ss"] * y[6] * 1000.0 / 60.0 / (p["kidney_mass_g"] / 100.0)


def _observables() -> tuple[Observable, ...]:
    out = [
        Observable("perfusate_anakinra_mg_per_l", perfusate_mg_per_l, "anakinra in the perfusate", "mg/L"),
        Observable("perfusate_anakinra_nM", lambda y, p: NM_PER_MG_PER_L * perfusate_mg_per_l(y, p), "anakinra in the perfusate (17.3 kDa)", "nM"),
        Observable("il1_pM", lambda y, p: y[2], "IL-1 in the renal interstitium", "pM"),
        Observable("il1_signal_fraction", il1_signal, "fraction of IL-1 signalling left (f_sig)", "-"),
    ]
    for i, (name, label) in enumerate(TRANSCRIPTS):
        out.append(Observable(f"{name}_fold", lambda y, p, i=i: y[3 + i], f"{label} mRNA vs the pre-ischaemia biopsy", "fold"))
        out.append(Observable(f"{name}_log2_fold", lambda y, p, i=i: jnp.log2(y[3 + i]), f"{label} mRNA, log2 fold", "log2"))
    out += [
        Observable("rbf_ml_per_min_per_100g", lambda y, p: p["rbf_ss"] * y[6], "renal blood flow", "mL/min/100 g"),
        Observable("crcl_ml_per_min_per_100g", _crcl, "creatinine clearance (= GFR)", "mL/min/100 g"),
        Observable("urine_ml_per_min_per_100g", lambda y, p: p["urine_fraction"] * _crcl(y, p), "urine output", "mL/min/100 g"),
        # FENa is a constant of the card; `0 * g` only gives it the state's shape and dtype.
        Observable("fena_pct", lambda y, p: p["fena"] + 0.0 * y[6], "fractional excretion of sodium", "%"),
    ]
    return tuple(out)


def _endpoints() -> tuple[Endpoint, ...]:
    # The end of NMP is the end of the run (the config's output.end_h): `value` endpoints
    # without a time and windows without an end take it.
    end = None
    out = list(standard_endpoints("perfusate_anakinra_mg_per_l"))
    out.append(Endpoint("perfusate_anakinra_end_nM", "perfusate_anakinra_nM", "value", end, description="perfusate anakinra at the end of NMP"))
    out.append(Endpoint("il1_signal_fraction_end", "il1_signal_fraction", "value", end, description="f_sig at the end of NMP"))
    for name, label in TRANSCRIPTS:
        out.append(Endpoint(f"{name}_fold_end", f"{name}_fold", "value", end, inhibition=f"{name}_fold_reduction_pct",
                            description=f"{label} fold change at the end of NMP (biopsy)"))
    for name in ("rbf", "crcl", "urine"):
        out.append(Endpoint(f"{name}_mean", f"{name}_ml_per_min_per_100g", "mean", 0.0, end, inhibition=f"{name}_reduction_pct",
                            description="time-averaged over the perfusion"))
    out.append(Endpoint("fena_mean", "fena_pct", "mean", 0.0, end, inhibition="fena_reduction_pct"))
    return tuple(out)


def renal_nmp_pig() -> Model:
    """The NMP-1 model (a reconstruction; see the module docstring)."""
    return Model(
        name="renal_nmp_pig",
        states=STATES,
        parameters=PARAMETERS,
        vector_field=vector_field,
        observables=_observables(),
        routes=(Route("arterial", "anakinra"),),
        description="NMP-1: porcine kidney normothermic machine perfusion, anakinra in a closed circuit",
        endpoints=_endpoints(),
        panels=(
            Panel("perfusate_anakinra_nM", "perfusate anakinra (nM)", log_scale=True),
            Panel("il6_fold", "IL-6 mRNA (fold)"),
            Panel("fasl_fold", "FasL mRNA (fold)"),
            Panel("icam1_fold", "ICAM-1 mRNA (fold)"),
            Panel("crcl_ml_per_min_per_100g", "CrCl (mL/min/100 g): unchanged"),
        ),
        report_time_unit="h",
    )
