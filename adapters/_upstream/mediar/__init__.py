"""MEDIAR (Lee et al. 2022) rebuilt: ``network`` (MEDIAR-Former on smp + checkpoint files), ``augment``
(normalisation, augmentations), ``recipe`` (flow targets, loss, the fine-tuning loop), ``sliding_window``
(windows, flip TTA, ensemble average, flows → instances). Used by `adapters.mediar`."""
