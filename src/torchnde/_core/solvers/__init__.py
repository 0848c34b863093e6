"""One file per numerical method."""

from .alf import ALF as ALF
from .auto_switch import AutoSwitch as AutoSwitch
from .bosh3 import Bosh3 as Bosh3
from .dopri5 import Dopri5 as Dopri5
from .dopri8 import Dopri8 as Dopri8
from .euler import Euler as Euler
from .fehlberg2 import Fehlberg2 as Fehlberg2
from .heun import Heun as Heun
from .implicit_euler import ImplicitEuler as ImplicitEuler
from .kvaerno3 import Kvaerno3 as Kvaerno3
from .kvaerno4 import Kvaerno4 as Kvaerno4
from .kvaerno5 import Kvaerno5 as Kvaerno5
from .leapfrog import Leapfrog as Leapfrog
from .midpoint import Midpoint as Midpoint
from .ralston import Ralston as Ralston
from .reversible_heun import ReversibleHeun as ReversibleHeun
from .rk4 import RK4 as RK4
from .rk38 import RK38 as RK38
from .rodas4 import Rodas4 as Rodas4
from .rodas5 import Rodas5 as Rodas5
from .ros3p import Ros3p as Ros3p
from .semi_implicit_euler import SemiImplicitEuler as SemiImplicitEuler
from .trapezoid import Trapezoid as Trapezoid
from .tsit5 import Tsit5 as Tsit5
from .yoshida4 import Yoshida4 as Yoshida4
