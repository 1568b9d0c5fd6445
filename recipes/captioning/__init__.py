"""Audio-visual captioning on rendered scenes: a timm image encoder, an AST audio encoder, VALOR-style
fusion (modality groups + contrastive alignment) and an autoregressive caption decoder."""
