"""``zoo separate MODEL MIX.wav --out DIR [--query TEXT | --query-audio CLIP.wav | --query-label NAME]``.

Writes one wav per separated source (``<stem>_s1.wav`` ...; ``<stem>_target.wav`` for a query model)
and a PNG of the mixture and source spectrograms. Input policy (stated, never silent): another sample
rate is resampled to the model's (logged), several channels are averaged to mono (logged), clipping
is warned about, and silence, audio shorter than one filter and unknown query labels are errors.
Inputs longer than ``--chunk-seconds`` go through overlap-add with permutation alignment.
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import soundfile as sf
from torch import Tensor

from zoo.data.audio import load_audio, save_audio

__all__ = ["add_arguments", "add_commands", "load_separator", "main", "read_mixture", "separate_file"]

log = logging.getLogger("zoo.separate")
SILENCE_PEAK = 1e-4          # peak below this (-80 dBFS): nothing to separate
CLIP_LEVEL, CLIP_FRACTION = 0.999, 1e-3


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("separate", help="separate a mixture into sources (optionally by a query)")
    add_arguments(p)
    p.set_defaults(func=main)


def add_arguments(p) -> None:
    p.add_argument("model", help="a saved model directory (separator or query model) or a name.tag with weights")
    p.add_argument("mix", help="the mixture audio file")
    p.add_argument("--out", required=True, help="output folder")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--query", help="text description of the source to extract (query models)")
    q.add_argument("--query-audio", help="an example clip of the source to extract (query models)")
    q.add_argument("--query-label", help="a class label of the source to extract (query models)")
    p.add_argument("--chunk-seconds", type=float, default=30.0, help="longer inputs are separated window by window")
    p.add_argument("--no-plot", action="store_true")


def load_separator(model: str):
    """A directory with query.json -> QuerySeparator; with config.json -> ZooModel; else a registered name.tag."""
    from zoo.graph import ZooModel

    path = Path(model)
    if (path / "query.json").is_file():
        from recipes.separation.query import QuerySeparator

        return QuerySeparator.load(path)
    if (path / "config.json").is_file():
        return ZooModel.from_pretrained(str(path))
    if path.exists():
        raise FileNotFoundError(f"{path} holds neither config.json nor query.json; pass a directory written by "
                                "save_pretrained (e.g. runs/separation-tiny/model)")
    from zoo.registry import create_model

    return create_model(model, pretrained=True)


def read_mixture(path: str | Path, sample_rate: int, min_samples: int, notes: list[str], what: str = "mixture") -> Tensor:
    """Mono float (T,) at ``sample_rate``; the input policy above, notes appended to ``notes``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot read audio ({err}); convert it to WAV or FLAC, "
                         f"e.g. `ffmpeg -i {path.name} out.wav`") from err
    before = len(notes)
    if info.channels > 1:
        notes.append(f"{path.name}: {info.channels} channels averaged to mono")
    if info.samplerate != sample_rate:
        notes.append(f"{path.name}: resampled from {info.samplerate} Hz to the model's {sample_rate} Hz")
    for note in notes[before:]:
        log.info(note)
    wav = load_audio(path, sample_rate, channels="mean")
    peak = float(wav.abs().max())
    if peak < SILENCE_PEAK:
        raise ValueError(f"{path}: the {what} is silent (peak {peak:.1e}); there is nothing to separate, "
                         "check the file or its gain")
    clipped = float((wav.abs() >= CLIP_LEVEL).float().mean())
    if clipped > CLIP_FRACTION:
        message = (f"{path.name}: {100 * clipped:.2f}% of the samples are at full scale (clipped); separation "
                   "quality will suffer, re-record or lower the gain before clipping")
        notes.append(message)
        warnings.warn(message, stacklevel=2)
    if wav.numel() < min_samples:
        raise ValueError(f"{path}: {wav.numel()} samples ({wav.numel() / sample_rate * 1000:.1f} ms) is shorter than one "
                         f"filter of {min_samples} samples; pass a longer recording (or pad it with zeros)")
    return wav


def _min_samples(model) -> int:
    from encoders.filterbank import FreeFilterbank, STFTFilterbank

    sizes = [m.kernel_size if isinstance(m, FreeFilterbank) else m.n_fft
             for m in model.modules() if isinstance(m, (FreeFilterbank, STFTFilterbank))]
    return max(sizes or [1])


def separate_file(model, mix: str | Path, out: str | Path, query: str | None = None, query_audio: str | None = None,
                  query_label: str | None = None, chunk_seconds: float = 30.0, plot: bool = True) -> dict:
    """Separate ``mix`` with ``model`` (a loaded model or what :func:`load_separator` takes) into ``out``."""
    from recipes.separation import longform
    from recipes.separation.query import QuerySeparator

    model = load_separator(model) if isinstance(model, (str, Path)) else model
    is_query = isinstance(model, QuerySeparator)
    separator = model.separator if is_query else model
    sr = int(separator.meta.get("sample_rate", 8000))
    asked = {k: v for k, v in (("--query", query), ("--query-audio", query_audio), ("--query-label", query_label)) if v}
    if len(asked) > 1:
        raise ValueError(f"give one query, not {', '.join(asked)}")
    if asked and not is_query:
        raise ValueError(f"{', '.join(asked)} needs a query model (a directory with query.json); this model "
                         "separates every source without a query")
    notes: list[str] = []
    condition = None
    if is_query:
        if not asked:
            raise ValueError("this is a query model: pass --query TEXT, --query-audio CLIP.wav or --query-label NAME "
                             f"(labels: {', '.join(model.nets.class_names)})")
        if query_label is not None:
            condition = model.nets.embed(label=query_label)
        elif query is not None:
            condition = model.nets.embed(text=query)
        else:
            clip = read_mixture(query_audio, sr, model.nets.tagger.dims.n_fft, notes, what="query clip")
            condition = model.nets.embed(audio=clip)
    wav = read_mixture(mix, sr, _min_samples(separator), notes)
    n_src = int(separator.meta.get("n_src", 2))
    fn = longform.model_fn(separator, condition)
    window = int(chunk_seconds * sr)
    if wav.numel() > window:
        notes.append(f"{wav.numel() / sr:.1f} s input: overlap-add over {chunk_seconds:g} s windows (hop 50%)")
        sources = longform.separate_tensor(fn, wav, n_src, window)
    else:
        sources = fn(wav[None])[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(mix).stem
    names = ["target"] if is_query else [f"s{i + 1}" for i in range(n_src)]
    paths = []
    for name, src in zip(names, sources):
        peak = float(src.abs().max())
        subtype = "PCM_16" if peak <= 1.0 else "FLOAT"
        if subtype == "FLOAT":
            notes.append(f"{stem}_{name}.wav: peak {peak:.2f} > 1, written as 32-bit float (no gain change)")
        paths.append(save_audio(out / f"{stem}_{name}.wav", src, sr, subtype=subtype))
    result = {"sources": [str(p) for p in paths], "sample_rate": sr, "notes": notes}
    if plot:
        from zoo.plots import plot_sources

        result["plot"] = str(plot_sources(out / f"{stem}_sources.png", wav, list(sources), sr, names))
    return result


def main(args) -> int:
    result = separate_file(args.model, args.mix, args.out, args.query, args.query_audio, args.query_label,
                           args.chunk_seconds, not args.no_plot)
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for path in result["sources"] + ([result["plot"]] if "plot" in result else []):
        print(path)
    return 0
