"""ASR + subtitling recipe: one audio, two transcripts (verbatim and subtitle), as in Poncelet & Van hamme,
"Leveraging Broadcast Media Subtitle Transcripts for Automatic Speech Recognition and Subtitling" (2025).

- ``text.py``: a closed-vocabulary news grammar (English, Dutch) producing both domains of a sentence.
- ``corpus.py``: the embedded eSpeak NG broadcast corpus (noise, reverb, seen/unseen voices, long-form files).
- ``data.py``: dataset + collate over the corpus manifests.
"""
