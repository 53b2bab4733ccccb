"""Training, data and export for hushbridge's denoise model (torch; never imported at run time).

- :mod:`.split`: the fixed train/evaluation split of ``../shared/data`` (``eval_split()``).
- :mod:`.data`: on-the-fly noisy/clean mixtures at 48 kHz.
- :mod:`.model`: the network (whole-signal training form and hop-by-hop streaming form).
- :mod:`.train`: resumable training from a TOML config.
- :mod:`.export`: ONNX export per the streaming contract in ``models/README.md``.
- :mod:`.evaluate`: a quick held-out check against the noisy input and RNNoise.
"""
