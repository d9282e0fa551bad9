"""Re-built upstream pieces the adapters use, one concern per module (read beside the upstream code).

An adapter file (`adapters/<model>.py`) stays a thin translation between the harness and one model; what the
upstream projects ship as code the harness cannot import as is (hard-coded CUDA, vendored or patched
libraries, training loops without an API) is rebuilt here, each module naming the upstream file it follows:
``cellseg1/`` (SAM + LoRA, the mask generator, prompts, tiles, augmentation, loss, selection, released LoRA
files), ``cellpose_common`` (what the cellpose 3 and Cellpose-SAM adapters share: offline import, training on
label maps, prediction), ``cellpose_files`` (cellpose 3 network files), ``cpsam`` (cellpose 4's CPSAM
networks), ``mediar/`` (the MEDIAR-Former network, augmentations, recipe, sliding window), ``ultralytics`` (the
offline sandbox). The leading underscore keeps `adapters.discover` from importing this package as an adapter.
"""
