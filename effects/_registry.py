"""Imports every effect module so each registers its class in ``hushbridge.effects.EFFECTS``."""

from hushbridge.effects import register
from hushbridge.effects.compressor import Compressor
from hushbridge.effects.filters import HighPass, PeakingEQ
from hushbridge.effects.limiter import Limiter

for _cls in (HighPass, PeakingEQ, Compressor, Limiter):
    register(_cls)

from hushbridge.effects.plugin import PluginEffect  # noqa: E402

register(PluginEffect)

from hushbridge.effects.loudness import Loudness  # noqa: E402

register(Loudness)

from hushbridge.effects.deesser import DeEsser  # noqa: E402
from hushbridge.effects.gate import Gate  # noqa: E402
from hushbridge.effects.hum import HumRemover  # noqa: E402
from hushbridge.effects.leveler import Leveler  # noqa: E402

for _cls in (HumRemover, Gate, DeEsser, Leveler):
    register(_cls)

from hushbridge.effects.denoise import Denoise  # noqa: E402
from hushbridge.effects.dereverb import Dereverb  # noqa: E402
from hushbridge.effects.isolate import VoiceIsolation  # noqa: E402

for _cls in (Denoise, Dereverb, VoiceIsolation):
    register(_cls)

from hushbridge.effects.declip import Declip  # noqa: E402

register(Declip)

from hushbridge.effects.automix import Automix  # noqa: E402

register(Automix)

from hushbridge.effects.duck import Duck  # noqa: E402

register(Duck)
