"""Ableton Live: the HushBridge MIDI Remote Script (``HushBridge/``), installed by
``hushbridge install-host-scripts ableton``."""
