"""Separation benchmark: the tiny Conv-TasNet against the ideal masks, and query-conditioned SDRi.

Claims checked (Luo & Mesgarani, TASLP 2019, Table IV: Conv-TasNet beats IBM / IRM / Wiener-like
masks; USS / AudioSep: one query-conditioned separator serves text, label and example-clip queries):

1. SI-SNRi and SDRi of the tiny model trained for a share of ``--minutes`` (or loaded with
   ``--model``) next to the IBM, IRM and Wiener-like oracles on the same held-out eSpeak mixtures,
   and whether it beats them (not expected within CPU minutes: calibration.md §B got 5.35 dB in 10 min).
2. SDRi of the queried source for text, label and example-clip queries, next to an unconditioned
   2-output separator's best-matching output (an oracle pick) on the same event mixtures.

Budget split of ``--minutes`` (training only; steps are sized from a timed probe): 50% speech separator,
10% tagger, 25% query separator, 15% unconditioned event separator; the text net trains a fixed 150 steps.

    .venv/bin/python benchmarks/separation.py --minutes 50 [--threads 2] [--model runs/separation-tiny/model]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.separation import evaluate, query, train
from recipes.separation.data import EventMixtures, collate_mixtures
from zoo.config import load_config
from zoo.registry import create_model
from zoo.train import TrainConfig, Trainer, seed_everything

SHARES = {"speech": 0.50, "tagger": 0.10, "query": 0.25, "unconditioned": 0.15}


def seconds_per_step(objective, dataset, collate, batch_size: int, probes: int = 3) -> float:
    """Wall time of one forward + backward + Adam step on a copy of ``objective`` (after one warm-up)."""
    model = copy.deepcopy(objective).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    batch = collate([dataset[i] for i in range(batch_size)])
    times = []
    for _ in range(probes + 1):
        start = time.perf_counter()
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def steps_for(budget_s: float, *probe_args) -> int:
    return max(5, int(budget_s / seconds_per_step(*probe_args)))


def config(steps: int, batch: int, out: Path, threads: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, lr=1e-3, weight_decay=0.0, warmup_steps=max(1, steps // 30),
                       schedule="cosine", min_lr_ratio=0.05, clip_norm=5.0, out_dir=str(out), tensorboard=False,
                       num_threads=threads, eval_every=0, checkpoint_every=0)


def speech_part(args, budget_s: float) -> dict:
    cfg = load_config(train.SeparationConfig, train.DEFAULT_CONFIG, [f"data.test_size={args.test_size}"])
    train_set, test_set = train.make_datasets(cfg.data)
    record: dict = {}
    if args.model:
        from zoo.graph import ZooModel

        model, record["loaded"] = ZooModel.from_pretrained(args.model), args.model
    else:
        seed_everything(0)
        model = create_model("conv_tasnet_tiny")
        steps = steps_for(budget_s, model, train_set, collate_mixtures, 4)
        start = time.time()
        train.fit(model, train_set, None, config(steps, 4, args.workdir / "speech", args.threads))
        record.update(steps=steps, train_seconds=round(time.time() - start, 1))
    table = evaluate.evaluate(model, test_set, batch_size=8, sdr=True)
    print(evaluate.format_table(table), flush=True)
    best_oracle = max(("ibm", "irm", "wiener"), key=lambda k: table[k]["si_snri"])
    beats = table["model"]["si_snri"] > table[best_oracle]["si_snri"]
    print(f"ours {'beats' if beats else 'does not beat'} the best ideal mask ({best_oracle}) on SI-SNRi", flush=True)
    return dict(record, mixtures=len(test_set), table=table, beats_ideal_masks=beats, best_oracle=best_oracle)


def query_part(args, budget: float) -> dict:
    events = EventMixtures(4000, seed=0, seconds=2.0)
    saved_query, saved_plain = args.workdir / "query" / "model", args.workdir / "events_pit" / "model"
    if args.reuse and saved_query.is_dir() and saved_plain.is_dir():  # score the models of an earlier run
        from zoo.graph import ZooModel

        system, plain = query.QuerySeparator.load(saved_query), ZooModel.from_pretrained(str(saved_plain))
        tagger_steps = sep_steps = plain_steps = query_seconds = None
    else:
        nets = query.QueryNets()
        tagger_steps = steps_for(budget * SHARES["tagger"], query._TaggerObjective(nets.tagger), events,
                                 query.collate_events, 8)
        nets.set_class_embeddings(clips_per_class=2)  # only so the probe's label queries are defined
        probe_sep = create_model("query_tasnet_tiny", condition_dim=nets.dim)
        sep_steps = steps_for(budget * SHARES["query"], probe_sep, events, query.QueryCollate(nets), 8)
        start = time.time()
        torch.set_num_threads(args.threads)
        system = query.train_query_system(args.workdir / "query", tagger_steps, 150, sep_steps, batch_size=8,
                                          train_size=len(events), progress=True)
        query_seconds = round(time.time() - start, 1)
        seed_everything(0)
        plain = create_model("conv_tasnet_tiny")
        plain_steps = steps_for(budget * SHARES["unconditioned"], plain, events, collate_mixtures, 8)
        Trainer(plain, events, collate_mixtures, config(plain_steps, 8, args.workdir / "events_pit", args.threads)).fit()
    test = EventMixtures(args.query_test_size, seed=7_919, seconds=2.0)
    sdri = query.score_queries(system, test)
    baseline = query.score_unconditioned(plain, test)
    for kind, value in sdri.items():
        print(f"query {kind:<6} SDRi {value:6.2f} dB", flush=True)
    print(f"unconditioned best-matching output SDRi {baseline:6.2f} dB", flush=True)
    return dict(mixtures=len(test), sdri=sdri, unconditioned_best_output_sdri=baseline, tagger_steps=tagger_steps,
                separator_steps=sep_steps, unconditioned_steps=plain_steps, query_train_seconds=query_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=50.0, help="total training budget (evaluation excluded)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="a trained speech separator to load instead of training one")
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--query-test-size", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-separation"))
    parser.add_argument("--reuse", action="store_true", help="score the query models an earlier run left in --workdir")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "separation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = 60 * args.minutes
    start = time.time()
    result = {"minutes": args.minutes, "threads": args.threads,
              "speech": speech_part(args, budget * SHARES["speech"]), "query": query_part(args, budget)}
    result["wall_seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
