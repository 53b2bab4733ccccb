"""Imports every effect module so each registers its class in ``hushbridge.effects.EFFECTS``."""

from hushbridge.effects import register
from hushbridge.effects.compressor import Compressor
from hushbridge.effects.filters import HighPass, PeakingEQ
from hushbridge.effects.limiter import Limiter

for _cls in (HighPass, PeakingEQ, Compressor, Limiter):
    register(_cls)

from hushbridge.effects.plugin import PluginEffect  # noqa: E402

register(PluginEffect)
