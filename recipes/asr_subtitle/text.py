"""News-like sentences in two domains: what is *spoken* (verbatim) and what a *subtitle* shows.

Poncelet & Van hamme, "Leveraging Broadcast Media Subtitle Transcripts for Automatic Speech Recognition
and Subtitling" (2025), §1-§3, treat verbatim transcripts and broadcast subtitles as two domains of one
utterance: the verbatim text keeps hesitations, repetitions, false starts and every spoken word; the
subtitle is cleaned and condensed, with digits, casing and punctuation. This grammar makes both from
one sampled sentence:

- templates are written in subtitle form; ``{slot}`` draws from a closed word list, ``{n:a-b}`` is a
  number (subtitle: digits; verbatim: spelt out, 0-9,999), ``{p:a-b}`` a percentage ("45%" / "forty
  five percent"), ``[spoken=written|...]`` a spoken phrase and its condensed subtitle form (either side
  may be empty, e.g. ``[Good evening.=]`` is spoken but not subtitled);
- the verbatim text is lowercase without punctuation, then gets disfluencies (:class:`Disfluency`).

17 templates per language (English, Dutch), as in calibration.md's corpus that a small CTC model learns.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["Sentence", "Disfluency", "NewsGrammar", "spell_number", "HESITATIONS", "LANGUAGES"]

LANGUAGES = ("en", "nl")
HESITATIONS = {"en": ("uh", "um"), "nl": ("euh", "eh")}
MARKERS = {"en": ("well", "so", "you know", "okay so"), "nl": ("nou", "dus", "ja", "allee")}

# --- numbers ---------------------------------------------------------------------------------------
_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen").split()
_EN_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NL_ONES = ("nul een twee drie vier vijf zes zeven acht negen tien elf twaalf dertien veertien vijftien "
            "zestien zeventien achttien negentien").split()
_NL_TENS = "twintig dertig veertig vijftig zestig zeventig tachtig negentig".split()


def _en(n: int) -> str:
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        return _EN_TENS[n // 10 - 2] + (f" {_EN_ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{_EN_ONES[n // 100]} hundred" + (f" and {_en(n % 100)}" if n % 100 else "")
    rest = n % 1000
    return f"{_en(n // 1000)} thousand" + ((" and " if rest < 100 else " ") + _en(rest) if rest else "")


def _nl_below_1000(n: int) -> str:
    if n < 20:
        return _NL_ONES[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        if unit == 0:
            return _NL_TENS[tens - 2]
        one = _NL_ONES[unit]
        return one + ("ën" if one.endswith("e") else "en") + _NL_TENS[tens - 2]  # tweeëntwintig
    hundreds, rest = divmod(n, 100)
    head = "honderd" if hundreds == 1 else _NL_ONES[hundreds] + "honderd"
    return head + (_nl_below_1000(rest) if rest else "")


def _nl(n: int) -> str:
    if n < 1000:
        return _nl_below_1000(n)
    thousands, rest = divmod(n, 1000)
    head = "duizend" if thousands == 1 else _nl_below_1000(thousands) + "duizend"
    return head + (f" {_nl_below_1000(rest)}" if rest else "")  # Dutch spelling: a space after duizend


def spell_number(n: int, lang: str) -> str:
    """0-9,999 in words: ``spell_number(3459, "en")`` -> 'three thousand four hundred and fifty nine'."""
    if not 0 <= n <= 9999:
        raise ValueError(f"spell_number covers 0-9999, got {n}")
    return {"en": _en, "nl": _nl}[lang](n)


# --- grammar ---------------------------------------------------------------------------------------
_SLOTS = {
    "en": dict(
        city="Amsterdam Rotterdam Utrecht Eindhoven Groningen Maastricht Ghent Antwerp Brussels Leuven "
             "Bruges Hasselt Mechelen Ostend Paris London Berlin Madrid Rome Vienna Lisbon Prague Dublin "
             "Oslo".split(),
        day="Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
        weather="sunny cloudy rainy windy cold warm foggy stormy dry wet".split(),
        event=["a football match", "a concert", "a demonstration", "a festival", "a party", "a street market",
               "a cycling race", "a protest march"],
        ministry="finance health education transport justice defence agriculture energy culture "
                 "labour".split(),
        vehicles="cars trucks buses vans lorries caravans".split(),
        good="bread milk petrol electricity coffee rice butter gas rent beer".split(),
        period=["the last week", "the last month", "the last year", "the last quarter"],
        building=["school", "hospital", "library", "museum", "station", "bridge", "swimming pool", "stadium",
                  "theatre", "park"],
        people="students farmers workers nurses teachers residents fans cyclists pensioners doctors".split(),
        issue=["the new tax", "the airport", "the budget cuts", "climate change", "the new law",
               "rising prices", "the new motorway", "the closure of the factory"],
        company=["the national bank", "the airline", "the brewery", "the steel company",
                 "the railway company", "the car maker", "the chemical group", "the energy supplier"],
        reason=["repairs", "a strike", "a power failure", "flooding", "a gas leak", "staff shortages",
                "a water leak", "a bomb alert"],
        animal="beetles frogs fish birds spiders bats snails ants moths worms".split(),
        fair=["festival", "fair", "exhibition", "flower show", "book fair", "zoo"],
        sector=["schools", "hospitals", "roads", "railways", "housing", "research", "defence",
                "public transport"],
    ),
    "nl": dict(
        city="Amsterdam Rotterdam Utrecht Eindhoven Groningen Maastricht Gent Antwerpen Brussel Leuven "
             "Brugge Hasselt Mechelen Oostende Parijs Londen Berlijn Madrid Rome Wenen Lissabon Praag Dublin "
             "Oslo".split(),
        day="maandag dinsdag woensdag donderdag vrijdag zaterdag zondag".split(),
        weather="zonnig bewolkt regenachtig winderig koud warm mistig stormachtig droog nat".split(),
        event=["een voetbalwedstrijd", "een concert", "een betoging", "een festival", "een feest",
               "een markt", "een wielerkoers", "een protestmars"],
        ministry="financiën gezondheid onderwijs mobiliteit justitie defensie landbouw energie cultuur "
                 "werk".split(),
        vehicles="auto's vrachtwagens bussen bestelwagens caravans motoren".split(),
        good="brood melk benzine elektriciteit koffie rijst boter gas huur bier".split(),
        period=["de afgelopen week", "de afgelopen maand", "het afgelopen jaar", "het afgelopen kwartaal"],
        building=["de school", "het ziekenhuis", "de bibliotheek", "het museum", "het station", "de brug",
                  "het zwembad", "het stadion", "de schouwburg", "het park"],
        people="studenten boeren arbeiders verpleegkundigen leraren bewoners supporters fietsers "
               "gepensioneerden artsen".split(),
        issue=["de nieuwe belasting", "de luchthaven", "de besparingen", "de klimaatverandering",
               "de nieuwe wet", "de stijgende prijzen", "de nieuwe snelweg", "de sluiting van de fabriek"],
        company=["de nationale bank", "de luchtvaartmaatschappij", "de brouwerij", "het staalbedrijf",
                 "de spoorwegmaatschappij", "de autobouwer", "de chemiegroep", "de energieleverancier"],
        reason=["werken", "een staking", "een stroompanne", "overstromingen", "een gaslek",
                "personeelstekort", "een waterlek", "een bommelding"],
        animal="kevers kikkers vissen vogels spinnen vleermuizen slakken mieren motten wormen".split(),
        fair=["het festival", "de beurs", "de tentoonstelling", "de bloemenshow", "de boekenbeurs", "de zoo"],
        sector=["scholen", "ziekenhuizen", "wegen", "spoorwegen", "huisvesting", "onderzoek", "defensie",
                "openbaar vervoer"],
    ),
}

_TEMPLATES = {
    "en": [
        "The weather in {city} will be {weather} on {day}.",
        "Police in {city} arrested {n:2-99} people after {event} on {day}.",
        "The minister of {ministry} [has announced that=says] {n:2-9999} new jobs will be created in {city}.",
        "[At this moment in time=Right now], {n:2-9999} {vehicles} are stuck in traffic near {city}.",
        "The team from {city} won [the match=] against {city} [on the evening of=on] {day}.",
        "The price of {good} rose by {p:1-99} over {period}.",
        "A fire destroyed {n:2-99} homes in {city} [during the night of=on] {day}.",
        "The mayor of {city} [said that she will=will] open a new {building} on {day}.",
        "[A large number of=Many] {people} gathered in {city} to protest against {issue}.",
        "Shares in {company} fell by {p:1-60} after a loss of {n:2-9999} million euros.",
        "The {building} in {city} will be closed until {day} [as a result of=due to] {reason}.",
        "Scientists in {city} have discovered {n:2-99} new species of {animal}.",
        "The train from {city} to {city} is delayed by {n:2-99} minutes.",
        "{n:2-9999} {people} visited the {fair} in {city} [over the course of=during] {period}.",
        "The government will spend {n:2-9999} million euros on {sector} [in the years to come=].",
        "Tonight temperatures in {city} will drop to {n:2-25} degrees.",
        "[Good evening and welcome.=] The prime minister will visit {city} on {day} to talk about {issue}.",
    ],
    "nl": [
        "Het weer in {city} wordt {weather} op {day}.",
        "De politie in {city} heeft {n:2-99} mensen opgepakt na {event} op {day}.",
        "De minister van {ministry} [heeft aangekondigd dat er=zegt dat er] {n:2-9999} nieuwe banen komen "
        "in {city}.",
        "[Op dit eigenste moment=Nu] staan er {n:2-9999} {vehicles} in de file bij {city}.",
        "De ploeg uit {city} won [de wedstrijd=] tegen {city} [op de avond van=op] {day}.",
        "De prijs van {good} steeg met {p:1-99} in {period}.",
        "Een brand heeft {n:2-99} woningen verwoest in {city} [in de nacht van=op] {day}.",
        "De burgemeester van {city} opent op {day} [officieel=] {building}.",
        "[Een groot aantal=Veel] {people} kwamen in {city} samen om te protesteren tegen {issue}.",
        "De aandelen van {company} daalden met {p:1-60} na een verlies van {n:2-9999} miljoen euro.",
        "{building} in {city} blijft dicht tot {day} [als gevolg van=door] {reason}.",
        "Wetenschappers in {city} hebben {n:2-99} nieuwe soorten {animal} ontdekt.",
        "De trein van {city} naar {city} heeft {n:2-99} minuten vertraging.",
        "{n:2-9999} {people} bezochten {fair} in {city} [in de loop van=in] {period}.",
        "De regering gaat {n:2-9999} miljoen euro uitgeven aan {sector} [in de komende jaren=].",
        "Vannacht daalt de temperatuur in {city} tot {n:2-25} graden.",
        "[Goedenavond, dit is het nieuws.=] De premier bezoekt {city} op {day} om te praten over {issue}.",
    ],
}
_PERCENT_WORD = {"en": "percent", "nl": "procent"}
_TOKEN = re.compile(r"\{[^}]+\}|\[[^\]]+\]|[^\s\[{]+")


def speakable(text: str) -> list[str]:
    """Lowercase words without punctuation (apostrophes and letters kept)."""
    return re.sub(r"[^\w'\s]", " ", text.lower()).split()


@dataclass(frozen=True)
class Sentence:
    verbatim: str       # spoken: lowercase, no punctuation, numbers spelt out, disfluencies
    subtitle: str       # written: condensed, digits, casing, punctuation
    fluent: str         # the verbatim words before disfluencies were added
    template: int


@dataclass(frozen=True)
class Disfluency:
    """Per-utterance probabilities of spontaneous-speech phenomena added to the verbatim text only."""

    hesitation: float = 0.5     # 1-2 fillers ("uh"/"um", "euh"/"eh") at word boundaries
    repetition: float = 0.3     # one word said twice
    false_start: float = 0.2    # the first 1-3 words, (a filler,) then the sentence again
    marker: float = 0.25        # a discourse marker before the sentence ("well", "nou", ...)


class NewsGrammar:
    """Closed-vocabulary news sentences for ``lang`` ("en" or "nl")."""

    def __init__(self, lang: str, disfluency: Disfluency = Disfluency()):
        if lang not in LANGUAGES:
            raise ValueError(f"no grammar for language {lang!r}; available: {LANGUAGES}")
        self.lang, self.disfluency = lang, disfluency
        self.slots, self.templates = _SLOTS[lang], [_TOKEN.findall(t) for t in _TEMPLATES[lang]]

    def sample(self, rng: random.Random) -> Sentence:
        index = rng.randrange(len(self.templates))
        spoken, written, used = [], [], {}
        for tok in self.templates[index]:
            if tok.startswith("{"):
                kind, _, span = tok[1:-1].partition(":")
                if span:
                    lo, hi = map(int, span.split("-"))
                    n = rng.randint(lo, hi)
                    words = spell_number(n, self.lang)
                    if kind == "p":
                        spoken.append(f"{words} {_PERCENT_WORD[self.lang]}"), written.append(f"{n}%")
                    else:
                        spoken.append(words), written.append(str(n))
                else:
                    taken = used.setdefault(kind, set())
                    value = rng.choice([v for v in self.slots[kind] if v not in taken])
                    taken.add(value)
                    spoken.append(value), written.append(value)
            elif tok.startswith("["):
                say, _, show = rng.choice(tok[1:-1].split("|")).partition("=")
                spoken.append(say), written.append(show)
            else:
                spoken.append(tok), written.append(tok)
        subtitle = re.sub(r"\s+([.,:;!?])", r"\1", " ".join(w for w in written if w))
        subtitle = subtitle[0].upper() + subtitle[1:]
        fluent = speakable(" ".join(spoken))
        return Sentence(" ".join(self.disfluent(fluent, rng)), subtitle, " ".join(fluent), index)

    def disfluent(self, words: list[str], rng: random.Random) -> list[str]:
        """Add repetitions, a false start, hesitations and a discourse marker (verbatim domain only)."""
        d, words = self.disfluency, list(words)
        hes = HESITATIONS[self.lang]
        if rng.random() < d.repetition:
            i = rng.randrange(len(words))
            words.insert(i, words[i])
        if rng.random() < d.false_start and len(words) > 3:
            k = rng.randint(1, 3)
            words = words[:k] + ([rng.choice(hes)] if rng.random() < 0.5 else []) + words
        if rng.random() < d.hesitation:
            for _ in range(rng.randint(1, 2)):
                words.insert(rng.randrange(1, len(words)), rng.choice(hes))
        if rng.random() < d.marker:
            words = rng.choice(MARKERS[self.lang]).split() + words
        return words

    def vocabulary(self) -> set[str]:
        """Every word a verbatim text can contain (numbers 0-9,999 included)."""
        words = set(HESITATIONS[self.lang]) | {w for m in MARKERS[self.lang] for w in m.split()}
        words |= {w for n in range(10000) for w in spell_number(n, self.lang).split()}
        words.add(_PERCENT_WORD[self.lang])
        for values in self.slots.values():
            words |= {w for v in values for w in speakable(v)}
        for template in self.templates:
            for tok in template:
                if tok.startswith("["):
                    words |= {w for alt in tok[1:-1].split("|") for w in speakable(alt.partition("=")[0])}
                elif not tok.startswith("{"):
                    words |= set(speakable(tok))
        return words
