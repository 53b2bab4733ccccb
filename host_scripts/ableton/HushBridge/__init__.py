"""HushBridge: an Ableton Live Remote Script that links Live to a running hushbridge engine over OSC.

Live loads it from ``User Library/Remote Scripts/HushBridge`` when "HushBridge" is chosen as a
Control Surface (Preferences > Link, Tempo & MIDI); ``hushbridge install-host-scripts ableton``
puts it there. Python 3.7 (Live 11) to 3.11 (Live 12), standard library only.
"""
from .surface import HushBridge


def create_instance(c_instance):
    """Live's entry point."""
    return HushBridge(c_instance)
