"""Speech separation: Conv-TasNet (TCN masker) and DPRNN presets on the learnable filterbank, PIT SI-SNR
training, and a converter from torchaudio's ConvTasNet (``recipes.separation.convert``)."""
