"""One file per numerical method."""

from .adams import Adams as Adams
from .alf import ALF as ALF
from .bosh3 import Bosh3 as Bosh3
from .dopri5 import Dopri5 as Dopri5
from .dopri8 import Dopri8 as Dopri8
from .euler import Euler as Euler
from .euler_heun import EulerHeun as EulerHeun
from .euler_maruyama import EulerMaruyama as EulerMaruyama
from .fehlberg2 import Fehlberg2 as Fehlberg2
from .fixed_adams import FixedAdams as FixedAdams
from .heun import Heun as Heun
from .ito_milstein import ItoMilstein as ItoMilstein
from .leapfrog import Leapfrog as Leapfrog
from .midpoint import Midpoint as Midpoint
from .ralston import Ralston as Ralston
from .reversible_heun import ReversibleHeun as ReversibleHeun
from .rk4 import RK4 as RK4
from .rk38 import RK38 as RK38
from .semi_implicit_euler import SemiImplicitEuler as SemiImplicitEuler
from .sra1 import SRA1 as SRA1
from .sri2 import SRI2 as SRI2
from .stratonovich_milstein import StratonovichMilstein as StratonovichMilstein
from .tsit5 import Tsit5 as Tsit5
from .yoshida4 import Yoshida4 as Yoshida4
