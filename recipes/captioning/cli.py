"""``zoo caption MODEL IMAGE [--audio A.wav] [--beams N --groups G --diversity D --n-best K]`` and
``zoo segment MODEL IMAGE --text "the red circle" [--out overlay.png]`` (X-Decoder models).

MODEL is a directory written by ``save_pretrained`` (or a hub id). Without ``--audio`` the captioner
sees the vision group only (VALOR's "v"), with it both ("va"). Images are read with Pillow
(grayscale / RGBA are converted by the vision encoder); audio with soundfile, mixed to mono and
resampled to the model's rate.
"""
from __future__ import annotations

import argparse


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("caption", help="caption an image (and optionally a sound) with a captioning model")
    p.add_argument("model", help="a saved model directory or hub id")
    p.add_argument("image", help="an image file (png, jpg, ...)")
    p.add_argument("--audio", help="a sound file played with the scene")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--groups", type=int, default=1, help="diverse beam search groups; must divide --beams")
    p.add_argument("--diversity", type=float, default=0.0, help="Hamming diversity strength (> 0 with --groups > 1)")
    p.add_argument("--n-best", type=int, default=1)
    p.add_argument("--max-len", type=int, default=22)
    p.set_defaults(func=caption_main)

    p = subparsers.add_parser("segment", help="segment what a referring expression names (X-Decoder models)")
    p.add_argument("model", help="a saved model directory with an X-Decoder head (e.g. xdecoder_scenes_tiny)")
    p.add_argument("image", help="an image file")
    p.add_argument("--text", required=True, help='a referring expression, e.g. "the red circle"')
    p.add_argument("--out", default="segment_overlay.png", help="where to write the mask overlay PNG")
    p.add_argument("--head", default="xdec")
    p.set_defaults(func=segment_main)


def load_inputs(image_path: str, audio_path: str | None, sample_rate: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(image_path) as img:
        mode = img.mode if img.mode in ("L", "RGB", "RGBA") else "RGB"
        pixels = np.asarray(img.convert(mode))
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    batch = {"image": torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None],
             "modalities": torch.tensor([[True, audio_path is not None]]), "ids": [image_path]}
    if audio_path is not None:
        import soundfile
        import torchaudio

        wav, sr = soundfile.read(audio_path, dtype="float32", always_2d=True)
        wav = torch.from_numpy(wav.mean(1))
        if sr != sample_rate:
            wav = torchaudio.functional.resample(wav, sr, sample_rate)
    else:  # the audio encoder still runs; its tokens are gated out (length 0) by the "v" group
        wav = torch.zeros(sample_rate)
    batch["audio"], batch["audio_lengths"] = wav[None], torch.tensor([wav.numel()])
    return batch


def caption_main(args: argparse.Namespace) -> int:
    from decoders.search import DecodingOptions
    from zoo.graph import ZooModel

    if args.beams < 1 or args.groups < 1 or args.beams % args.groups:
        raise ValueError(f"--groups {args.groups} must divide --beams {args.beams} (each group runs beams/groups "
                         "beams); e.g. --beams 4 --groups 2")
    if args.groups > 1 and args.diversity <= 0:
        raise ValueError("--groups > 1 needs --diversity > 0 (e.g. 0.5); with 0 the groups are plain beam search")
    if args.n_best > args.beams:
        raise ValueError(f"--n-best {args.n_best} must not exceed --beams {args.beams}")
    from recipes.captioning.evaluate import caption_head

    model = ZooModel.from_pretrained(args.model)
    head = caption_head(model)
    batch = load_inputs(args.image, args.audio, int(model.meta.get("sample_rate", 16000)))
    options = DecodingOptions(beam_size=args.beams, groups=args.groups, diversity=args.diversity,
                              n_best=args.n_best, max_len=args.max_len)
    out = model.generate(batch, heads=head, options=options)[head][0]
    for hyp in out if isinstance(out, list) else [out]:
        print(f"{hyp.score:8.3f}  {hyp.text}")
    return 0


def segment_main(args: argparse.Namespace) -> int:
    from recipes.captioning.evaluate import ground_mask
    from zoo.graph import ZooModel
    from zoo.plots import plot_mask_overlay

    model = ZooModel.from_pretrained(args.model)
    if not args.text.strip():
        raise ValueError("--text is empty; give a referring expression such as 'the red circle'")
    image = load_inputs(args.image, None, int(model.meta.get("sample_rate", 16000)))["image"][0].permute(1, 2, 0)
    mask, prob = ground_mask(model, image, args.text, args.head)
    image = image.numpy()
    rgb = image[..., :3] if image.shape[-1] >= 3 else image.repeat(3, -1)
    path = plot_mask_overlay(args.out, rgb, mask.numpy(), title=f"{args.text} (p={prob:.2f})")
    print(f"{path}  ({int((mask >= 0.5).sum())} pixels)")
    return 0
