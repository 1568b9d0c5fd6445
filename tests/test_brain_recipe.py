"""The brain-decoding recipe: simulated cohorts, the decode-brain command, reset-tuning, the MEG claim (slow)."""
import numpy as np
import pytest
import torch

from recipes.brain_decoding.data import FMRIConfig, FMRITrials, collate_fmri, fmri_cohort
from recipes.brain_decoding.meg_data import MEGConfig, MEGSegments, collate_meg, meg_cohort

SMALL = FMRIConfig(voxels=(120, 90, 150), n_train=24, n_test=30, noise=1.0)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "cache"))


def test_fmri_cohort_is_seeded_and_zscored_with_training_statistics():
    a, b = fmri_cohort(SMALL), fmri_cohort(SMALL)
    assert np.array_equal(a.subjects[2].train_voxels, b.subjects[2].train_voxels)
    assert np.array_equal(a.embeddings, b.embeddings)
    d = a.subjects[3]
    assert d.train_voxels.shape == (24 * 3, 150) and d.test_voxels.shape == (30, 150)
    np.testing.assert_allclose(d.train_voxels.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(d.train_voxels.std(0), 1, atol=1e-3)
    assert not np.allclose(d.test_voxels.std(0), 1, atol=0.05)            # test used the training statistics
    assert np.array_equal(a.subjects[1].test_images, a.subjects[3].test_images)     # shared test images
    assert not set(a.subjects[1].train_images) & set(a.subjects[2].train_images)    # own training images
    assert a.image(5).shape == (64, 64, 3)
    other = fmri_cohort(FMRIConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(other.subjects[2].train_voxels, a.subjects[2].train_voxels)


def test_fractions_keep_whole_images_and_batches_mix_voxel_counts():
    cohort = fmri_cohort(SMALL)
    part = FMRITrials(cohort, [1, 2], "train", fraction=0.25)
    assert len(part) == 2 * 6 * 3                                          # 6 of 24 images, all 3 repeats
    images = [part[i]["image"] for i in range(len(part))]
    assert all(images.count(i) == 3 for i in set(images))
    batch = collate_fmri([part[0], part[len(part) - 1]])
    assert batch["fmri"].shape == (2, 120) and batch["fmri_lengths"].tolist() == [120, 90]
    assert torch.all(batch["fmri"][1, 90:] == 0) and batch["subject_ids"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="not in the cohort"):
        FMRITrials(cohort, [9])


def test_decode_brain_ranks_candidates_and_rejects_too_few(tmp_path, capsys):
    from recipes.brain_decoding.cli import main
    from recipes.brain_decoding.presets import fmri_spec

    torch.manual_seed(0)
    model = fmri_spec("t", {"1": 50}, "linear", "resmlp", hidden=16, depth=1, embed_dim=8, loss="softclip").build()
    model.save_pretrained(tmp_path / "model")
    betas = torch.randn(3, 50)
    np.save(tmp_path / "betas.npy", betas.numpy())
    with torch.no_grad():
        query = model.eval().generate(dict(fmri=betas.mean(0, keepdim=True), subject_ids=torch.tensor([1])),
                                      heads="retrieval")["retrieval"][0]
    cands = tmp_path / "cands"
    cands.mkdir()
    emb = torch.randn(6, 8)
    emb[4] = 5 * query                                                     # the best match by construction
    np.save(cands / "embeddings.npy", emb.numpy())
    (cands / "names.txt").write_text("\n".join(f"img{i}" for i in range(6)))
    assert main(["decode-brain", str(tmp_path / "model"), "--subject", "1", str(tmp_path / "betas.npy"),
                 "--candidates", str(cands), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "top 3 of 6 candidates" in lines[0] and "img4" in lines[1] and "+1.000" in lines[1]
    with pytest.raises(ValueError, match="candidate set has 6 entries but --top 10"):
        main(["decode-brain", str(tmp_path / "model"), str(tmp_path / "betas.npy"), "--subject", "1",
              "--candidates", str(cands), "--top", "10"])
    with pytest.raises(ValueError, match="subject 2 has no adapter"):
        main(["decode-brain", str(tmp_path / "model"), str(tmp_path / "betas.npy"), "--subject", "2",
              "--candidates", str(cands)])


def test_decode_brain_embeds_candidate_images_with_the_target_space(tmp_path):
    from PIL import Image

    from recipes.brain_decoding.cli import load_candidates

    cohort = fmri_cohort(SMALL)
    (tmp_path / "imgs").mkdir()
    for i in (0, 7):
        Image.fromarray(cohort.image(i)).save(tmp_path / "imgs" / f"scene{i}.png")
    cohort.space.save(tmp_path / "target_space.npz")
    emb, names = load_candidates(tmp_path / "imgs", tmp_path)
    assert names == ["scene0.png", "scene7.png"]
    np.testing.assert_allclose(emb.numpy(), cohort.embeddings[[0, 7]], rtol=1e-4, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="target_space.npz"):
        load_candidates(tmp_path / "imgs", tmp_path / "imgs")


def test_reset_tuning_trains_only_the_new_subject(tmp_path):
    from recipes.brain_decoding.adapt import reset_tune
    from recipes.brain_decoding.train import quick_config, train_fmri

    cohort = fmri_cohort(SMALL)
    model = train_fmri(cohort, [1, 2], tmp_path / "src", steps=20, hidden=32, depth=1, pool=32)
    trunk = {k: v.clone() for k, v in model.state_dict().items() if "adapters" not in k and "builders" not in k}
    report = reset_tune(model, cohort, 3, 0.5, quick_config(tmp_path / "ad", 20, 16), eval_n=30)
    assert list(report.rows) == ["sub03"] and report.n == 30
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trunk.items())
    assert "3" in model.encoders["brain"].adapters and model.spec_encoders["brain"]["subjects"]["3"] == 150
    assert (tmp_path / "ad" / "model" / "config.json").is_file()


def test_meg_cohort_segments_and_padding():
    cfg = MEGConfig(sensors=(70, 40), train_minutes=0.4, test_minutes=0.3, seed=3)
    cohort = meg_cohort(cfg)
    assert [s["positions"].shape for s in cohort.subjects] == [(70, 2), (40, 2)]
    test = MEGSegments(cohort, None, "test")
    assert len(test) == 2 * len(cohort.starts["test"]) and np.all(np.diff(cohort.starts["test"]) == 50)
    batch = collate_meg([test[0], test[len(test) - 1]])
    assert batch["meg"].shape == (2, 70, 50) and batch["sensor_mask"].sum(1).tolist() == [70, 40]
    assert batch["targets"]["segments"]["embedding"].shape == (2, 50, cfg.speech_dim)
    train = cohort.subjects[0]["train"]
    np.testing.assert_allclose(train.mean(1), 0, atol=1e-3)                     # z-scored per sensor


@pytest.mark.slow
def test_meg_top10_among_500_segments_is_well_above_chance(tmp_path):
    from recipes.brain_decoding.evaluate import meg_report
    from recipes.brain_decoding.train import train_meg

    cohort = meg_cohort(MEGConfig())
    report = meg_report(train_meg(cohort, tmp_path, steps=800), cohort)
    assert report.n >= 500
    assert report.summary()["top10"] > 10 * (10 / report.n)                 # chance is 10 / N


def test_train_main_reads_yaml_config_and_feeds_the_bimixco_schedule(tmp_path):
    from recipes.brain_decoding import train

    seen = []
    real_fit = train.fit

    def spy(model, *args, **kwargs):
        model.register_forward_hook(lambda m, a, out: seen.append(float(m.encoders["brain"].progress)) if m.training else None)
        return real_fit(model, *args, **kwargs)

    train.fit = spy
    try:
        assert train.main(["model=brain_mindeye2_tiny", "subjects=[1, 2]", "eval_n=30", "fmri.voxels=[120, 90, 150]",
                           "fmri.n_train=24", "fmri.n_test=30", "train.steps=6", "train.batch_size=16",
                           f"train.out_dir={tmp_path}", "train.progress=false", "train.tensorboard=false"]) == 0
    finally:
        train.fit = real_fit
    assert seen == pytest.approx([i / 6 for i in range(6)])   # progress was set before every training forward
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "config.yaml").is_file()
