"""NSD-style betas (HDF5, .npy + stimulus index) and MNE recordings, from files the tests write."""
import numpy as np
import pytest

from recipes.brain_decoding.formats import average_repeats, load_betas, load_mne, read_stimulus_index, zscore


def test_hdf5_volumes_with_a_mask_and_a_csv_index(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(6, 4, 5, 3)).astype(np.float32)
    mask = np.zeros((4, 5, 3), dtype=bool)
    mask[1:3, 2:5, 1] = True
    with h5py.File(tmp_path / "betas_session01.hdf5", "w") as f:
        d = f.create_dataset("betas", data=np.round(vol * 300).astype(np.int16))   # NSD stores int16 x 300
        d.attrs["scale"] = 300.0
    np.save(tmp_path / "nsdgeneral.npy", mask)
    (tmp_path / "index.csv").write_text("trial,73k_id\n" + "".join(f"{i},{i % 3 + 10}\n" for i in range(6)))
    betas = load_betas(tmp_path / "betas_session01.hdf5", index=tmp_path / "index.csv", mask=tmp_path / "nsdgeneral.npy")
    assert betas.betas.shape == (6, int(mask.sum()))
    np.testing.assert_allclose(betas.betas, vol[:, mask], atol=1 / 300)
    assert betas.images.tolist() == [10, 11, 12, 10, 11, 12]
    avg, ids = average_repeats(betas.betas, betas.images)
    assert ids.tolist() == [10, 11, 12]
    np.testing.assert_allclose(avg[0], betas.betas[[0, 3]].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="pass mask="):
        load_betas(tmp_path / "betas_session01.hdf5")


def test_npy_betas_nan_policies_and_train_only_zscore(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    x[2, 1] = np.nan
    np.save(tmp_path / "b.npy", x)
    np.save(tmp_path / "idx.npy", np.array([3, 1, 4, 1]))
    with pytest.raises(ValueError, match="1 voxels hold NaN.*nan='drop'"):
        load_betas(tmp_path / "b.npy")
    dropped = load_betas(tmp_path / "b.npy", index=tmp_path / "idx.npy", nan="drop")
    assert dropped.betas.shape == (4, 4) and dropped.voxel_index.tolist() == [0, 2, 3, 4]
    assert dropped.images.tolist() == [3, 1, 4, 1]
    assert load_betas(tmp_path / "b.npy", nan="zero").betas[2, 1] == 0
    (tmp_path / "short.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="2 entries but the betas have 4 trials"):
        load_betas(tmp_path / "b.npy", index=tmp_path / "short.txt", nan="zero")
    train, test = np.random.default_rng(1).normal(3, 2, (50, 3)), np.full((2, 3), 3.0)
    ztrain, ztest = zscore(train, test)
    np.testing.assert_allclose(ztrain.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ztest, (test - train.mean(0)) / train.std(0), rtol=1e-5)   # train statistics
    (tmp_path / "ids.tsv").write_text("image\tsession\n7\t1\n9\t1\n")
    assert read_stimulus_index(tmp_path / "ids.tsv").tolist() == [7, 9]


def test_mne_raw_and_epochs_files_give_data_rate_and_layout_positions(tmp_path):
    mne = pytest.importorskip("mne")
    montage = mne.channels.make_standard_montage("biosemi64")
    names = ["Fz", "Cz", "Pz", "C3", "C4", "O1", "O2", "T7"]
    info = mne.create_info(names, sfreq=100.0, ch_types="eeg")
    data = np.random.default_rng(0).normal(size=(8, 300)) * 1e-6
    raw = mne.io.RawArray(data, info, verbose="error").set_montage(montage)
    raw.save(tmp_path / "sub-01_raw.fif", verbose="error")
    rec = load_mne(tmp_path / "sub-01_raw.fif")
    assert rec.data.shape == (1, 8, 300) and rec.sfreq == 100.0 and rec.channels == names
    np.testing.assert_allclose(rec.data[0], data, rtol=1e-5, atol=1e-12)
    assert rec.positions.shape == (8, 2) and rec.positions.min() >= 0 and rec.positions.max() <= 1
    p = dict(zip(names, rec.positions))
    assert p["C3"][0] < p["Cz"][0] < p["C4"][0]            # left-to-right on the layout
    assert p["O1"][1] < p["Pz"][1] < p["Fz"][1]            # back-to-front
    epochs = mne.EpochsArray(data.reshape(8, 3, 100).transpose(1, 0, 2), info, verbose="error").set_montage(montage)
    epochs.save(tmp_path / "sub-01-epo.fif", verbose="error")
    ep = load_mne(tmp_path / "sub-01-epo.fif")
    assert ep.data.shape == (3, 8, 100)
    nopos = mne.io.RawArray(data, info, verbose="error")
    with pytest.raises(ValueError, match="set a montage"):
        load_mne(nopos)
