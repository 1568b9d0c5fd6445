"""Data basics shared by every recipe.

- :mod:`zoo.data.audio`: ``load_audio`` / ``save_audio`` (soundfile I/O, explicit resampling, a stated
  channel policy) and ``check_waveform`` for in-memory audio.
- :mod:`zoo.data.manifest`: JSONL manifests validated against a small schema on load.
- :mod:`zoo.data.collate`: padding collates (audio + lengths, token targets + lengths, dicts of tensors).
- :mod:`zoo.data.espeak`: speech synthesis through the eSpeak NG shared library (ctypes).
- :mod:`zoo.data.bucketing`: duration-bucketed, resumable, rank-aware batch sampler (lhotse).
- :mod:`zoo.data.sampler`: the plain resumable batch sampler and its protocol.

Submodules are imported on use, so ``import zoo.data`` stays cheap (lhotse is only needed for bucketing).
"""
