"""Hairer's DOP853: the Dormand–Prince 8(5,3) method with its combined error estimator."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau
from ..terms import AbstractTerm

__all__ = ["Dopri8"]

# The coefficients involve sqrt(6), so they are given as the 30-digit decimals published with
# DOP853 (Hairer, Nørsett & Wanner, Sec. II.10 and the code ``dop853.f``).
_B = (
    5.42937341165687622380535766363e-2,
    0.0,
    0.0,
    0.0,
    0.0,
    4.45031289275240888144113950566,
    1.89151789931450038304281599044,
    -5.8012039600105847814672114227,
    3.1116436695781989440891606237e-1,
    -1.52160949662516078556178806805e-1,
    2.01365400804030348374776537501e-1,
    4.47106157277725905176885569043e-2,
)
# Hairer's ``er`` coefficients: b_i - b̂_i for the embedded fifth-order solution b̂.
_B_MINUS_BHAT5 = (
    0.1312004499419488073250102996e-1,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.1225156446376204440720569753e1,
    -0.4957589496572501915214079952,
    0.1664377182454986536961530415e1,
    -0.3503288487499736816886487290,
    0.3341791187130174790297318841,
    0.8192320648511571246570742613e-1,
    -0.2235530786388629525884427845e-1,
)

_DOPRI8_TABLEAU = ButcherTableau(
    a=[
        [5.26001519587677318785587544488e-2],
        [1.97250569845378994544595329183e-2, 5.91751709536136983633785987549e-2],
        [2.95875854768068491816892993775e-2, 0.0, 8.87627564304205475450678981324e-2],
        [
            2.41365134159266685502369798665e-1,
            0.0,
            -8.84549479328286085344864962717e-1,
            9.24834003261792003115737966543e-1,
        ],
        [
            1 / 27,
            0.0,
            0.0,
            1.70828608729473871279604482173e-1,
            1.25467687566822425016691814123e-1,
        ],
        [
            19 / 512,
            0.0,
            0.0,
            1.70252211019544039314978060272e-1,
            6.02165389804559606850219397283e-2,
            -9 / 512,
        ],
        [
            3.70920001185047927108779319836e-2,
            0.0,
            0.0,
            1.70383925712239993810214054705e-1,
            1.07262030446373284651809199168e-1,
            -1.53194377486244017527936158236e-2,
            8.27378916381402288758473766002e-3,
        ],
        [
            6.24110958716075717114429577812e-1,
            0.0,
            0.0,
            -3.36089262944694129406857109825,
            -8.68219346841726006818189891453e-1,
            2.75920996994467083049415600797e1,
            2.01540675504778934086186788979e1,
            -4.34898841810699588477366255144e1,
        ],
        [
            4.77662536438264365890433908527e-1,
            0.0,
            0.0,
            -2.48811461997166764192642586468,
            -5.90290826836842996371446475743e-1,
            2.12300514481811942347288949897e1,
            1.52792336328824235832596922938e1,
            -3.32882109689848629194453265587e1,
            -2.03312017085086261358222928593e-2,
        ],
        [
            -9.3714243008598732571704021658e-1,
            0.0,
            0.0,
            5.18637242884406370830023853209,
            1.09143734899672957818500254654,
            -8.14978701074692612513997267357,
            -1.85200656599969598641566180701e1,
            2.27394870993505042818970056734e1,
            2.49360555267965238987089396762,
            -3.0467644718982195003823669022,
        ],
        [
            2.27331014751653820792359768449,
            0.0,
            0.0,
            -1.05344954667372501984066689879e1,
            -2.00087205822486249909675718444,
            -1.79589318631187989172765950534e1,
            2.79488845294199600508499808837e1,
            -2.85899827713502369474065508674,
            -8.87285693353062954433549289258,
            1.23605671757943030647266201528e1,
            6.43392746015763530355970484046e-1,
        ],
    ],
    b=_B,
    c=[
        0.0,
        5.26001519587677318785587544488e-2,
        7.89002279381515978178381316732e-2,
        1.18350341907227396726757197510e-1,
        2.81649658092772603273242802490e-1,
        1 / 3,
        1 / 4,
        4 / 13,
        127 / 195,
        3 / 5,
        6 / 7,
        1.0,
    ],
    order=8,
    b_error=[b - e for b, e in zip(_B, _B_MINUS_BHAT5, strict=True)],
    error_order=8,
)


# b_i - b̂_i for Hairer's third-order embedded solution (``bhh`` in dop853.f) on stages 1, 9, 12.
_B_MINUS_BHAT3 = tuple(
    b
    - {0: 0.244094488188976377952755905512, 8: 0.733846688281611857341361741547}.get(
        i, 0.220588235294117647058823529412e-1 if i == 11 else 0.0
    )
    for i, b in enumerate(_B)
)


# The three extra stages of Hairer's continuous extension (``contd8`` in dop853.f): nodes
# c14, c15, c16 and their rows of `a` over the stages before them. Stage 13 (index 12) is the
# vector field at the end of the step, f(t1, y1); a row's entries over stages it skips are 0.
_C_EXTRA = (0.1, 0.2, 7 / 9)
_A_EXTRA = (
    (
        5.61675022830479523392909219681e-2,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        2.53500210216624811088794765333e-1,
        -2.46239037470802489917441475441e-1,
        -1.24191423263816360469010140626e-1,
        1.5329179827876569731206322685e-1,
        8.20105229563468988491666602057e-3,
        7.56789766054569976138603589584e-3,
        -8.298e-3,
    ),
    (
        3.18346481635021405060768473261e-2,
        0.0,
        0.0,
        0.0,
        0.0,
        2.83009096723667755288322961402e-2,
        5.35419883074385676223797384372e-2,
        -5.49237485713909884646569340306e-2,
        0.0,
        0.0,
        -1.08347328697249322858509316994e-4,
        3.82571090835658412954920192323e-4,
        -3.40465008687404560802977114492e-4,
        1.41312443674632500278074618366e-1,
    ),
    (
        -4.28896301583791923408573538692e-1,
        0.0,
        0.0,
        0.0,
        0.0,
        -4.69762141536116384314449447206,
        7.68342119606259904184240953878,
        4.06898981839711007970213554331,
        3.56727187455281109270669543021e-1,
        0.0,
        0.0,
        0.0,
        -1.39902416515901462129418009734e-3,
        2.9475147891527723389556272149,
        -9.15095847217987001081870187138,
    ),
)
# The d-coefficients (``d4*``..``d7*`` in dop853.f) of the four highest terms of the
# interpolant, over all 16 stages.
_D = (
    (
        -8.4289382761090128651353491142,
        0.0,
        0.0,
        0.0,
        0.0,
        5.6671495351937776962531783590e-1,
        -3.0689499459498916912797304727,
        2.3846676565120698287728149680,
        2.1170345824450282767155149946,
        -8.7139158377797299206789907490e-1,
        2.2404374302607882758541771650,
        6.3157877876946881815570249290e-1,
        -8.8990336451333310820698117400e-2,
        1.8148505520854727256656404962e1,
        -9.1946323924783554000451984436,
        -4.4360363875948939664310572000,
    ),
    (
        1.0427508642579134603413151009e1,
        0.0,
        0.0,
        0.0,
        0.0,
        2.4228349177525818288430175319e2,
        1.6520045171727028198505394887e2,
        -3.7454675472269020279518312152e2,
        -2.2113666853125306036270938578e1,
        7.7334326684722638389603898808,
        -3.0674084731089398182061213626e1,
        -9.3321305264302278729567221706,
        1.5697238121770843886131091075e1,
        -3.1139403219565177677282850411e1,
        -9.3529243588444783865713862664,
        3.5816841486394083752465898540e1,
    ),
    (
        1.9985053242002433820987653617e1,
        0.0,
        0.0,
        0.0,
        0.0,
        -3.8703730874935176555105901742e2,
        -1.8917813819516756882830838328e2,
        5.2780815920542364900561016686e2,
        -1.1573902539959630126141871134e1,
        6.8812326946963000169666922661,
        -1.0006050966910838403183860980,
        7.7771377980534432092869265740e-1,
        -2.7782057523535084065932004339,
        -6.0196695231264120758267380846e1,
        8.4320405506677161018159903784e1,
        1.1992291136182789328035130030e1,
    ),
    (
        -2.5693933462703749003312586129e1,
        0.0,
        0.0,
        0.0,
        0.0,
        -1.5418974869023643374053993627e2,
        -2.3152937917604549567536039109e2,
        3.5763911791061412378285349910e2,
        9.3405324183624310003907691704e1,
        -3.7458323136451633156875139351e1,
        1.0409964950896230045147246184e2,
        2.9840293426660503123344363579e1,
        -4.3533456590011143754432175058e1,
        9.6324553959188282948394950600e1,
        -3.9177261675615439165231486172e1,
        -1.4972683625798562581422125276e2,
    ),
)

_CoeffKey = tuple[torch.dtype, torch.device]
_E3_CACHE: dict[_CoeffKey, torch.Tensor] = {}
_DENSE_CACHE: dict[_CoeffKey, tuple[torch.Tensor, torch.Tensor]] = {}


def _dense_coeffs(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` rows of the extra stages, (3, 15) zero-padded, and ``d``, (4, 16), cast once."""
    key = (dtype, device)
    hit = _DENSE_CACHE.get(key)
    if hit is None:
        a = torch.zeros(3, 15, dtype=torch.float64)
        for i, row in enumerate(_A_EXTRA):
            a[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
        d = torch.tensor(_D, dtype=torch.float64)
        hit = _DENSE_CACHE[key] = (
            a.to(dtype=dtype, device=device),
            d.to(dtype=dtype, device=device),
        )
    return hit


class _Dop853Dense(NamedTuple):
    """What one step keeps for its dense output; the interpolant is built on first use."""

    y0: torch.Tensor
    y1: torch.Tensor
    K: torch.Tensor  # (12, *y.shape): the stage increments k_i = prod(f_i, control)
    k13: torch.Tensor  # prod(f(t1, y1), control)
    t0: torch.Tensor
    t1: torch.Tensor
    control: Any
    terms: AbstractTerm
    args: Any
    # [F, recorded, uncounted]: F (7, N) the interpolant's coefficients once built, whether
    # autograd recorded them, and the evaluations made for them not yet reported by
    # `Dopri8.take_dense_fevals`. Empty until the first interpolation of the step.
    cache: list


def _build_interpolant(info: _Dop853Dense) -> torch.Tensor:
    """The coefficients F (7, N) of Hairer's interpolant, three extra evaluations."""
    y0, K, terms, control = info.y0, info.K, info.terms, info.control
    a, d = _dense_coeffs(y0.dtype, y0.device)
    y0f = y0.reshape(1, -1)
    Kx = torch.cat([K.reshape(K.shape[0], -1), info.k13.reshape(1, -1).to(y0.dtype)])  # (13, N)
    h = info.t1 - info.t0
    for i, c in enumerate(_C_EXTRA):
        n = Kx.shape[0]
        yi = torch.addmm(y0f, a[i : i + 1, :n], Kx).view_as(y0)
        ki = terms.prod(terms.vf(info.t0 + c * h, yi, info.args), control).to(y0.dtype)
        Kx = torch.cat([Kx, ki.reshape(1, -1)])
    dy = (info.y1 - y0).reshape(1, -1)
    k1 = Kx[:1]
    bspl = k1 - dy
    return torch.cat([dy, bspl, dy - Kx[12:13] - bspl, d @ Kx])


class Dopri8(AbstractRungeKutta):
    r"""Hairer's DOP853, the Dormand–Prince eighth-order method (SciPy's ``DOP853``).

    Order 8. Error estimate of order 8 from Hairer's combination of the fifth- and
    third-order embedded solutions, $e = e_5 |e_5| / \sqrt{e_5^2 + 0.01\, e_3^2}$ (taken
    componentwise here, so it is independent of the batch; Hairer combines the norms).
    12 stages, not FSAL. Explicit.

    Dense output: Hairer's continuous extension of order 7 (``contd8`` in ``dop853.f``), a
    polynomial of degree 7 in the fraction of the step built from the 12 stages, the vector
    field at the end of the step (computed anyway for the next step) and three extra
    evaluations at ``t0 + (0.1, 0.2, 7/9) h``. The extra evaluations are made lazily, only for
    steps whose dense output is used (save times in the step, an event located in it,
    ``Solution.evaluate``), once per step: the interpolant is cached with the step.
    :meth:`take_dense_fevals` reports them, and the loop adds those made during the solve (for
    save times and events) to ``stats["num_fevals"]``. ``Solution.evaluate`` calls the vector
    field (with the ``args`` of the solve) for steps not interpolated during the solve; those
    evaluations come after the stats and are not counted.

    Use it for non-stiff problems at tight tolerances (about 1e-8 and below), where its
    high order lets it take far fewer steps than :class:`Dopri5` or :class:`Tsit5`.

    Reference:
        E. Hairer, S. P. Nørsett and G. Wanner, *Solving Ordinary Differential Equations I:
        Nonstiff Problems*, 2nd ed., Springer, 1993, Sec. II.10.
        P. J. Prince and J. R. Dormand, "High order embedded Runge–Kutta formulae",
        *Journal of Computational and Applied Mathematics* 7(1):67–75, 1981.
    """

    tableau: ClassVar[ButcherTableau] = _DOPRI8_TABLEAU
    dense_output: ClassVar[str] = "dop853"  # Hairer's continuous extension, _Dop853Dense

    def step(
        self,
        terms: AbstractTerm,
        t0: torch.Tensor,
        t1: torch.Tensor,
        y0: torch.Tensor,
        args: Any,
        state: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any, Any]:
        y1, y_error, (_, _, K, k13), vf1 = super().step(terms, t0, t1, y0, args, state)
        control = terms.contr(t0, t1)
        dense_info = _Dop853Dense(y0, y1, K, k13, t0, t1, control, terms, args, [])
        return y1, y_error, dense_info, vf1

    def take_dense_fevals(self, dense_info: Any) -> int:
        """Vector-field evaluations made by this step's dense output since the last call."""
        cache = dense_info.cache
        if not cache:
            return 0
        n, cache[2] = cache[2], 0
        return n

    def interpolate(self, dense_info: Any, theta: torch.Tensor, per_sample: bool) -> torch.Tensor:
        info: _Dop853Dense = dense_info
        cache = info.cache
        # Built once per step; rebuilt only when autograd must now record what it did not.
        if not cache or (torch.is_grad_enabled() and not cache[1]):
            uncounted = cache[2] if cache else 0
            cache[:] = [_build_interpolant(info), torch.is_grad_enabled(), uncounted + 3]
        F = cache[0]  # (7, N)
        y0 = info.y0
        # y(θ) = y0 + θ(F0 + (1-θ)(F1 + θ(F2 + (1-θ)(F3 + θ(F4 + (1-θ)(F5 + θ F6)))))): the
        # weight of F_j is the product of its first j+1 factors θ, 1-θ, θ, ...
        x = theta.to(y0.dtype)
        factors = torch.stack([x, 1 - x] * 3 + [x], dim=-1)
        w = torch.cumprod(factors, dim=-1)  # (..., 7)
        if per_sample:
            return y0 + torch.einsum("bm,mb...->b...", w, F.view((7,) + y0.shape))
        return y0 + (w @ F).view((-1,) + y0.shape)

    def _error_estimate(
        self, coeffs: dict[str, Any], Kf: torch.Tensor, y0: torch.Tensor
    ) -> torch.Tensor | None:
        key = (y0.dtype, y0.device)
        e3_row = _E3_CACHE.get(key)
        if e3_row is None:
            e3_row = _E3_CACHE[key] = torch.tensor(
                _B_MINUS_BHAT3, dtype=y0.dtype, device=y0.device
            )[None]
        e5 = torch.mm(coeffs["e_row"], Kf).view_as(y0)
        e3 = torch.mm(e3_row, Kf).view_as(y0)
        # e5 ~ h^6 and e3 ~ h^4, so e5^2 / e3 behaves like h^8: the estimate matches the
        # eighth-order solution while staying as reliable as the fifth-order one.
        den = e5 * e5 + 0.01 * e3 * e3
        # Where both estimates vanish (a constant component, a finished sample) the estimate is
        # 0; the `where` keeps rsqrt(0) = inf out of the gradient as well as the value.
        safe = torch.where(den > 0, den, torch.ones_like(den))
        return torch.where(den > 0, e5 * e5.abs() * torch.rsqrt(safe), torch.zeros_like(e5))


# AbstractRungeKutta.__init_subclass__ sets the Hermite order from the tableau (which has no
# dense polynomial of its own); Hairer's continuous extension above is of order 7.
Dopri8.dense_order = 7
