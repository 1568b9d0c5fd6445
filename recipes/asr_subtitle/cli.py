"""`zoo transcribe`: verbatim and subtitle tracks of audio files as txt / srt / vtt / json."""


def add_commands(subparsers) -> None:
    from recipes.asr_subtitle import transcribe

    p = subparsers.add_parser("transcribe", help="transcribe + subtitle audio files (long-form, buffered CTC)")
    transcribe.add_arguments(p)
    p.set_defaults(func=transcribe.main)
