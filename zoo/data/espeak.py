"""Speech synthesis through the eSpeak NG shared library, called with ctypes.

The library and its data come from the PyPI package ``espeakng-loader`` (``get_library_path()``,
``get_data_path()``), so no system package is needed. Even where the Debian ``espeak-ng`` binary
exists we use the library: one code path, no subprocess per utterance, samples straight into numpy.

API used (espeak-ng ``speak_lib.h``): ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)``,
``espeak_SetSynthCallback`` (the callback receives int16 chunks), ``espeak_ng_SetRandSeed``,
``espeak_SetVoiceByName``, ``espeak_SetParameter(espeakRATE | espeakPITCH)``, ``espeak_Synth``,
``espeak_Terminate``. Output is 22,050 Hz mono int16, returned as float32 in [-1, 1].

Determinism: eSpeak keeps synthesis state in C statics that ``espeak_Initialize`` does not reset
(e.g. the pitch-flutter index in ``wavegen.c:AdvanceParameters``), so an utterance would depend on
every utterance synthesised before it in the process, i.e. on how work was spread over workers. Each
call therefore loads the library afresh (``dlopen`` -> synthesise -> ``dlclose``; about 5 ms) and
seeds eSpeak's random generator, which makes an utterance a pure function of (text, voice, rate,
pitch, seed). Every process (e.g. each of 2 multiprocessing workers) has its own library instance.

Voices (verified with this build, espeak-ng 1.52): the ``gmw/*`` language voices ``en``, ``en-us``,
``en-029``, ``en-gb-scotland``, ``en-gb-x-rp``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, ``en-us-nyc``
and ``nl``, each with ``+m1``..``+m8`` / ``+f1``..``+f5`` variants (see :func:`working_voices`). The
name ``en-gb`` is *not* found by ``espeak_SetVoiceByName`` here (British English is ``en``), and
MBROLA voices (``mb-*``) fail: neither the mbrola binary nor its voice files ship with the package.
"""
from __future__ import annotations

import _ctypes
import ctypes
import logging
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = ["ESpeak", "ESpeakError", "synthesize", "working_voices", "NATIVE_RATE", "VOICE_BASES", "VARIANTS"]

log = logging.getLogger(__name__)

NATIVE_RATE = 22050
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH = 1, 3
RATE_RANGE, PITCH_RANGE = (80, 450), (0, 99)

VOICE_BASES = {
    "en": ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc"),
    "nl": ("nl",),
}
VARIANTS = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6))

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()  # the library keeps global state: one synthesis at a time per process


class ESpeakError(RuntimeError):
    """eSpeak NG could not be loaded or could not synthesise a request."""


def _default_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as err:
        raise ESpeakError(
            "speech synthesis needs the eSpeak NG library from the 'espeakng-loader' package; "
            "install it with `pip install espeakng-loader` (or the project's [data] extra)"
        ) from err
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _version(lib) -> str:
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib.espeak_Info(None).decode()


class ESpeak:
    """One eSpeak NG library; ``synthesize`` returns float32 samples at :data:`NATIVE_RATE` Hz."""

    def __init__(self, library: str | None = None, data_path: str | None = None):
        if library is None or data_path is None:
            default_lib, default_data = _default_paths()
            library, data_path = library or default_lib, data_path or default_data
        self.library, self.data_path = str(Path(library).resolve()), str(data_path)
        if not Path(self.library).is_file():
            raise ESpeakError(f"eSpeak NG library {self.library} does not exist; reinstall espeakng-loader")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced while the library may call it
        self._checked_unload = False
        self.version = self._with_library(_version)

    def _collect(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def _with_library(self, fn):
        """Run ``fn(lib)`` on a freshly loaded and initialised library, then unload it."""
        with _LOCK:
            lib = ctypes.CDLL(self.library)
            try:
                lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
                rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
                if rate != NATIVE_RATE:
                    raise ESpeakError(f"espeak_Initialize failed ({rate}) with data {self.data_path}; "
                                      "reinstall espeakng-loader")
                return fn(lib)
            finally:
                lib.espeak_Terminate()
                handle = lib._handle
                del lib
                _ctypes.dlclose(handle)
                self._check_unloaded()

    def _check_unloaded(self) -> None:
        if self._checked_unload:
            return
        self._checked_unload = True
        maps = Path("/proc/self/maps")
        if maps.is_file() and self.library in maps.read_text():
            log.warning("%s stayed loaded after dlclose (another module holds it open); eSpeak output may "
                        "then depend on the order of synthesis calls", self.library)

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                   seed: int = 0) -> np.ndarray:
        """Speak ``text`` with ``voice`` (e.g. ``"en-us+m3"``) at ``rate`` words/min and ``pitch`` 0-99."""
        if not text.strip():
            raise ValueError("synthesize: empty text; pass at least one word")
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise ValueError(f"synthesize: rate {rate} words/min is outside eSpeak's {RATE_RANGE}")
        if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
            raise ValueError(f"synthesize: pitch {pitch} is outside eSpeak's {PITCH_RANGE}")

        def run(lib):
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(int(seed) & 0x7FFFFFFF))
            if lib.espeak_SetVoiceByName(ctypes.c_char_p(voice.encode())) != 0:
                raise ESpeakError(
                    f"eSpeak voice {voice!r} not found; use a gmw language voice with an optional variant, "
                    f"e.g. 'en-us+m3' or 'nl+f2' (see zoo.data.espeak.working_voices()); MBROLA voices "
                    "(mb-*) need the mbrola program, which is not installed"
                )
            lib.espeak_SetParameter(PARAM_RATE, int(rate), 0)
            lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            status = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            if status != 0:
                raise ESpeakError(f"espeak_Synth failed with status {status} for voice {voice!r}")
            chunks, self._chunks = self._chunks, []
            return chunks

        chunks = self._with_library(run)
        if not chunks:
            raise ESpeakError(f"eSpeak produced no audio for voice {voice!r} and text {text[:60]!r}")
        return np.concatenate(chunks).astype(np.float32) / 32768.0


@lru_cache(maxsize=1)
def _engine() -> ESpeak:
    return ESpeak()


@lru_cache(maxsize=8)
def _resampler(orig: int, new: int):
    import torchaudio

    log.info("eSpeak output is resampled from %d Hz to %d Hz", orig, new)
    return torchaudio.transforms.Resample(orig, new)  # functional.resample's sinc kernel, cached


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, sample_rate: int = 16000,
               seed: int = 0) -> np.ndarray:
    """Synthesize with this process's library and resample 22,050 Hz -> ``sample_rate``; float32 (T,)."""
    wav = _engine().synthesize(text, voice, rate, pitch, seed)
    if sample_rate != NATIVE_RATE:
        with torch.no_grad():
            wav = _resampler(NATIVE_RATE, sample_rate)(torch.from_numpy(wav)).numpy()
    return wav


def working_voices(languages=("en", "nl"), variants=VARIANTS, text: str = "one two three") -> dict[str, bool]:
    """Try every base voice of ``languages`` (with and without each variant); voice -> whether it spoke."""
    engine, result = _engine(), {}
    for lang in languages:
        for base in VOICE_BASES[lang]:
            for voice in (base, *(f"{base}+{v}" for v in variants)):
                try:
                    result[voice] = len(engine.synthesize(text, voice)) > NATIVE_RATE // 10
                except ESpeakError:
                    result[voice] = False
    return result
