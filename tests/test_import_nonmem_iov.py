"""`vtrial import-nonmem` of inter-occasion variability (issue 21): NONMEM's usual coding
(`$OMEGA BLOCK(1) v` then `BLOCK(1) SAME`, the occasion's ETA selected by IF (OCC.EQ.k)
and added to a between-subject ETA) as `[variability.occasions]` on that ETA's parameter.

Default tests read control streams only (`tests/models/iov_oral.ctl`, pharmpy's `moxo`,
refusals). The `long` test evaluates the population objective: the imported
`iov_oral.ctl` and the hand-written IOV fit of the same model (`one_compartment`,
`iov_omega2`) give the same OFV at the same parameters.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest


pharmpy = pytest.importorskip("pharmpy", reason="pharmpy-core (the nonmem extra) is not installed")

from test_occasions import spec, write_dataset  # noqa: E402

from vtrial.io.nonmem_control import read_control_stream  # noqa: E402
from conftest import assert_control_stream_refused  # noqa: E402
from vtrial.jobs.import_nonmem import import_nonmem, load_config  # noqa: E402

EXAMPLES = Path(pharmpy.__file__).parent / "internals" / "example_models"
MODELS = Path(__file__).resolve().parent / "models"


def _control_stream(tmp_path, text: str | None = None) -> Path:
    write_dataset(tmp_path / "iov_oral.csv")
    path = tmp_path / "iov_oral.ctl"
    path.write_text(text if text is not None else (MODELS / "iov_oral.ctl").read_text())
    return path


def test_iov_coding_becomes_occasions(tmp_path):
    cs, model_path, config_path = import_nonmem(_control_stream(tmp_path), tmp_path / "out")
    assert cs.etas == ["ETA_1"] and cs.occasions.column == "OCC" and cs.occasions.occasion_etas == ["ETA_2", "ETA_3"]
    cfg = tomllib.loads(config_path.read_text())
    assert cfg["variability"]["occasions"] == {"eta_1": 0.04} and cfg["variability"]["omega"] == {"eta_1": 0.09}
    assert cfg["data"]["occasion"] == "OCC"
    text = model_path.read_text()
    assert "iovcl = 0  # line 13: IOVCL = OCC1*ETA(2) + OCC2*ETA(3)  (occasion ETAs" in text
    assert "occ1" not in text  # the flags that only selected the occasion ETAs are left out
    built = load_config(config_path)
    assert built.estimation_spec().iov_omega2 == {"eta_1": 0.04}


def test_moxo_occasions(tmp_path):
    """pharmpy's moxo: IOV on CL and KA over the visits (VISI 3, 8), CL's ETA in a BLOCK(2)."""
    cs = read_control_stream(EXAMPLES / "moxo.mod")
    assert cs.occasions.column == "VISI"
    assert {e: c[:2] for e, c in cs.occasions.carriers.items()} == {"ETA_1": ("IOV_CL", 0.0234871),
                                                                      "ETA_3": ("IOV_KA", 0.51776)}
    assert cs.etas == ["ETA_1", "ETA_2", "ETA_3"]


@pytest.mark.parametrize("change, where, why", [
    ({"CL = THETA(1)*EXP(ETA(1) + IOVCL)": "CL = THETA(1)*EXP(ETA(1))*(1 + IOVCL)"}, "$OMEGA (line 22)",
     "do not enter only as an addition"),
    ({"IOVCL = OCC1*ETA(2) + OCC2*ETA(3)": "IOVCL = OCC1*ETA(2)"}, "$OMEGA (line 22)", "not the same statement in every occasion"),
    ({"IOVCL = OCC1*ETA(2) + OCC2*ETA(3)": "IOVCL = OCC1*ETA(2) + OCC2*ETA(2)"}, "$OMEGA (line 22)", "two values of OCC"),
    ({"V = THETA(2)": "V = THETA(2)*(1 + OCC2)"}, "$PK (line 17)", "reads the occasion item OCC"),  # S2 = V
])
def test_iov_refused_where_it_does_not_map(tmp_path, change, where, why):
    assert_control_stream_refused(_control_stream(tmp_path), change, where, why)


@pytest.mark.long
def test_imported_iov_equals_the_hand_written_fit(tmp_path):
    """The imported config's OFV at its initial values equals the hand-written IOV fit's
    (one_compartment with IIV and IOV on CL, proportional error 0.1) at the same values."""
    from vtrial.estimation import fit_population
    from vtrial.io.nonmem import read_nonmem
    from vtrial.models import one_compartment

    _, _, config_path = import_nonmem(_control_stream(tmp_path), tmp_path / "out")
    built = load_config(config_path)
    population = read_nonmem(built.cfg.data_file(), built.model, built.cfg.data)
    imported = fit_population(built.model, population, built.estimation_spec(), method=built.method,
                              solver=built.options, max_iterations=0, covariance=None)
    model = one_compartment(absorption=True)
    data = read_nonmem(tmp_path / "iov_oral.csv", model, {"routes": {"oral": [1]}})
    by_hand = fit_population(model, data, spec(iov_omega2={"cl": 0.04}), max_iterations=0, covariance=None)
    assert imported.ofv == pytest.approx(by_hand.ofv, abs=1e-6)
