"""Control plane: parameter addressing, the hand-off to the audio thread, OSC (and MIDI)."""
