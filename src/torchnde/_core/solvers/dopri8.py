"""Hairer's DOP853: the Dormand–Prince 8(5,3) method with its combined error estimator."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..runge_kutta import AbstractRungeKutta
from ..tableau import ButcherTableau

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
_E3_CACHE: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


class Dopri8(AbstractRungeKutta):
    r"""Hairer's DOP853, the Dormand–Prince eighth-order method (SciPy's ``DOP853``).

    Order 8. Error estimate of order 8 from Hairer's combination of the fifth- and
    third-order embedded solutions, $e = e_5 |e_5| / \sqrt{e_5^2 + 0.01\, e_3^2}$ (taken
    componentwise here, so it is independent of the batch; Hairer combines the norms).
    12 stages, not FSAL. Dense output: cubic Hermite, order 3 (min(p, 3)); Hairer's
    seventh-order interpolant needs three extra stages and is not used. Explicit.

    Use it for non-stiff problems at tight tolerances (about 1e-8 and below), where its
    high order lets it take far fewer steps than :class:`Dopri5` or :class:`Tsit5`.

    Reference:
        E. Hairer, S. P. Nørsett and G. Wanner, *Solving Ordinary Differential Equations I:
        Nonstiff Problems*, 2nd ed., Springer, 1993, Sec. II.10.
        P. J. Prince and J. R. Dormand, "High order embedded Runge–Kutta formulae",
        *Journal of Computational and Applied Mathematics* 7(1):67–75, 1981.
    """

    tableau: ClassVar[ButcherTableau] = _DOPRI8_TABLEAU

    def _error_estimate(
        self, coeffs: dict[str, Any], Kf: torch.Tensor, y0: torch.Tensor
    ) -> torch.Tensor | None:
        key = (y0.dtype, y0.device)
        e3_row = _E3_CACHE.get(key)
        if e3_row is None:
            e3_row = _E3_CACHE[key] = torch.tensor(
                _B_MINUS_BHAT3, dtype=y0.dtype, device=y0.device
            )[None]
        e5 = torch.mm(coeffs["e_row"], Kf).view(y0.shape)
        e3 = torch.mm(e3_row, Kf).view(y0.shape)
        # e5 ~ h^6 and e3 ~ h^4, so e5^2 / e3 behaves like h^8: the estimate matches the
        # eighth-order solution while staying as reliable as the fifth-order one.
        tiny = torch.finfo(y0.dtype).tiny
        return e5 * e5.abs() * torch.rsqrt(e5 * e5 + 0.01 * e3 * e3 + tiny)
