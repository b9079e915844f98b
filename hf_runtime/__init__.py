"""The torch runtime that hf-fuse and hf-eval share: base models (folders, GGUF files and their cache, the
registry-installed models), replay data, generation, processes (data parallel, FSDP), trackers, and the one
training loop (``hf_runtime.trainer``) every trainable method and baseline runs through.

It imports nothing from ``hf_fuse`` or ``hf_eval``: fusion sits above it, evaluation beside fusion.
"""
