r"""The IL-1RI occupancy -> signalling link shared by the mouse, pig and CAF cards (§0.1).

Source: §0.1 of the project's model card for the IL-1 link and the mouse PK, a
reconstruction: K_I 0.21 nM (anakinra at murine IL-1RI, EL4 cells; the seed) and K_L
0.26 nM (IL-1α, Kilian et al. 1986, J Immunol 136:4509) are published, `tau` is an
assumption of each card.
Anakinra (A) and IL-1 (alpha + beta, L) compete for IL-1RI at equilibrium, and the
IL-1-occupied fraction is transduced by an operational model with receptor reserve
$\tau$:

$$
l = \frac{L}{K_L},\quad c = \frac{C_{site}}{K_I},\quad
\rho(c) = \frac{l}{1 + l + c},\quad
E(c) = \frac{\tau\rho}{1 + \tau\rho},\quad
f_{sig}(c) = \frac{E(c)}{E(0)} = \frac{1 + (1+\tau)\,l}{1 + (1+\tau)\,l + c},
$$

and the anakinra-occupied fraction is $c / (1 + l + c)$. $L$ and $C_{site}$ are in nM;
a concentration in mg/L becomes nM with the molecular weight of anakinra, 17.3 kDa
(1 mg/L = 57.803 nM; the cards round this to 57.8, a difference of 5e-5 relative).

The right-hand form of $f_{sig}$ is the ratio simplified. It is exactly $E(c)/E(0)$ for
$l > 0$, and it stays defined when there is no IL-1 at all ($l = 0$, where $E(c)/E(0)$
is 0/0): its limit there, $1/(1 + c)$, is what a vanishing IL-1 level tends to.
(Assumption of this module, needed because the AMI card's drive starts at zero.)

A process $X$ that depends on IL-1 runs on $drive_X (1 - f_X + f_X f_{sig})$
(`il1_dependent`), with $f_X$ its IL-1-dependent fraction; an IL-1R knockout sets
$f_{sig} \equiv 0$ (and $E \equiv 0$), through the 0/1 design parameter `il1r_ko`
(`knockout`).

Closed form (card, "calc"): $f_{sig} = 1/2$ at $c_{50} = (1 + l)(1 + \tau\rho_0)$ with
$\rho_0 = \rho(0) = l/(1 + l)$, so

$$IC_{50} = K_I (1 + l)(1 + \tau\rho_0) = K_I\,(1 + (1 + \tau)\,l),$$

which moves right with the IL-1 level and the receptor reserve: in vivo blockade needs a
large molar excess of anakinra.

Equilibrium binding is assumed (kon 10 /nM/h relaxes within minutes at the nM levels
that matter) and receptor depletion is neglected (A, card §0.1).

Every function is pure elementwise arithmetic, so it takes JAX arrays (or numpy arrays,
or floats) and can be used inside a model's right-hand side, vmapped and differentiated.
"""

from __future__ import annotations

from vtrial.models.base import Parameter

#: Molecular weight of anakinra (kDa) and the conversion of 1 mg/L to nM.
ANAKINRA_MW_KDA = 17.3
NM_PER_MG_PER_L = 1e6 / (ANAKINRA_MW_KDA * 1e3)

#: K_I of anakinra at murine IL-1RI (nM): seed, via the receptor card.
K_I_NM = 0.21
#: K_L of IL-1 alpha/beta at IL-1RI (nM): Kilian 1986, via the receptor card.
K_L_NM = 0.26

_INF = float("inf")


def link_parameters(tau: float, tau_source: str = "A") -> tuple[Parameter, ...]:
    """The link's parameters: `k_i`, `k_l` (nM), `tau` (-) and the knockout switch `il1r_ko`.

    **Arguments:**
    - `tau`: the card's receptor reserve (3-30, an assumption of each card);
    - `tau_source`: its source label.

    **Returns:** four `Parameter`s, to be added to a model's parameters.
    """
    return (
        Parameter("k_i", K_I_NM, "nM", 1e-12, _INF, "K_I of anakinra at murine IL-1RI", "seed (receptor card): EL4 6.1 Ki 0.21 nM"),
        Parameter("k_l", K_L_NM, "nM", 1e-12, _INF, "K_L of IL-1 alpha/beta at IL-1RI", "P: Kilian 1986, via the receptor card"),
        Parameter("tau", tau, "-", 0.0, _INF, "operational receptor reserve of IL-1 signalling", tau_source),
        Parameter("il1r_ko", 0.0, "-", 0.0, 1.0, "IL-1R knockout switch: 1 forces IL-1 signalling to 0", "design",
                  treatment=True),
    )


def antagonist_ratio(conc_mg_per_l, k_i_nm):
    """$c = C_{site} / K_I$: free anakinra at the site (mg/L) over its K_I (nM), dimensionless."""
    return conc_mg_per_l * NM_PER_MG_PER_L / k_i_nm


def agonist_ratio(il1_nm, k_l_nm):
    """$l = L / K_L$: IL-1 at the site (nM) over its K_L (nM), dimensionless."""
    return il1_nm / k_l_nm


def il1_occupancy(c, l):
    r"""$\rho(c) = l / (1 + l + c)$: the IL-1-occupied fraction of IL-1RI."""
    return l / (1.0 + l + c)


def anakinra_occupancy(c, l):
    """$c / (1 + l + c)$: the anakinra-occupied fraction of IL-1RI."""
    return c / (1.0 + l + c)


def il1_signal(c, l, tau):
    r"""$E(c) = \tau\rho / (1 + \tau\rho)$: the absolute IL-1 signal (0..1)."""
    tr = tau * il1_occupancy(c, l)
    return tr / (1.0 + tr)


def signalling_fraction(c, l, tau):
    r"""$f_{sig} = E(c)/E(0) = (1 + (1+\tau) l) / (1 + (1+\tau) l + c)$: IL-1 signalling left.

    1 without drug, falling to 0 as $c \to \infty$; defined at $l = 0$ (see the module
    docstring)."""
    a = 1.0 + (1.0 + tau) * l
    return a / (a + c)


def il1_dependent(f_x, f_sig):
    """$1 - f_X + f_X f_{sig}$: the factor on a drive whose IL-1-dependent fraction is `f_x`."""
    return 1.0 - f_x + f_x * f_sig


def knockout(signal, il1r_ko):
    """`signal` in a wild-type animal (`il1r_ko` = 0), 0 in an IL-1R knockout (`il1r_ko` = 1)."""
    return signal * (1.0 - il1r_ko)


def il1_ic50(k_i, l, tau):
    r"""Closed-form IC50 of the link: $K_I (1 + l)(1 + \tau\rho_0)$, $\rho_0 = l/(1 + l)$.

    **Arguments:** `k_i` (any concentration unit; the result is in the same unit), `l`
    ($L/K_L$), `tau`.

    **Returns:** the site concentration of anakinra at which $f_{sig} = 1/2$.
    """
    rho0 = l / (1.0 + l)
    return k_i * (1.0 + l) * (1.0 + tau * rho0)
