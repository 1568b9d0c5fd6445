"""Brain decoding: fMRI -> image retrieval (MindEye2 / MindBridge / See Through Their Minds) and MEG -> speech segments (Défossez et al. 2023)."""
