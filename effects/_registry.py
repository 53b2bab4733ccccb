"""Imports every effect module so each registers its class in ``hushbridge.effects.EFFECTS``."""
