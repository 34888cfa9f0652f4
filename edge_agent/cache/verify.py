"""Verification beyond cosine for the semantic cache.

Cosine similarity of sentence embeddings cannot tell "convert 5 km to miles" from
"convert 5 miles to km": swaps of numbers, entities, operands, direction and negation
score as high as paraphrases. A wrong cached answer is worse than a miss, so a
candidate above the cosine threshold is served only if its *question* agrees with the
new one on the things that change the answer.

The word guards here look for evidence of one kind each (numbers, names, negation,
direction...); the alignment guard (`align.py`) requires every difference between the
two prompts to be explained. Per-text work happens once in :func:`signature` (stored
with the cache entry at store time, computed for the query at lookup); :func:`check`
compares two signatures, looking up word relations it has not cached yet. Neither
raises: any text yields a signature, and one that could not be parsed agrees only with
the very same text.

The measurements behind each guard and the threshold are in docs/semantic-cache.md
(`make bench-cache` regenerates them).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from edge_agent.cache import align, lexicon

# The cosine threshold of the shipped decision. The alignment guard decides whether two
# prompts say the same; the threshold only picks the candidates worth aligning and
# keeps the FAISS neighbours of unrelated questions out. Chosen on the dev splits
# (docs/semantic-cache.md, "Threshold").
DEFAULT_THRESHOLD: float = 0.75

# The guards check() runs, cheapest and most decisive first. Each name is also the
# switch the benchmark uses to measure what a guard buys.
GUARDS: tuple[str, ...] = (
    "numbers",
    "operators",
    "quoted",
    "identifiers",
    "entities",
    "negation",
    "direction",
    "antonyms",
    "qtype",
    "align",
)
# Measured and not shipped (docs/semantic-cache.md): available to check(guards=...).
CANDIDATE_GUARDS: tuple[str, ...] = ("frame", "content", "length")

MAX_CHARS = 4096  # a longer prompt is judged on its beginning and its end
FRAME_MAX = 3  # the frame guard looks at edits of at most this many words per side
CONTENT_MAX = 2  # candidate "content" guard: at most this many unmatched words per side
LENGTH_RATIO = 3.0  # candidate "length" guard: content-word count ratio


# --------------------------------------------------------------------------- lexicons
# Small closed-class lists written for this module. They are incomplete on purpose: a
# word missing here makes a guard stay silent (the cosine threshold still applies).


_words = lexicon.words


def _seq(s: str) -> list[str]:
    return s.split()


_STOP = _words(
    """
    a an the of in on at to for from with by about as into onto over under and or but if
    then than so is are was were be been being am do does did doing done have has had
    having can could would should will shall may might must i me my mine we us our you
    your yours he him his she her it its they them their this that these those there here
    what which who whom whose why how when where please tell give show explain help want
    need like know get got make way ways some any all each every much many very really
    just also too yes not up out off down one ones thing things something anything able use
    using used s t let lets kindly im id ive whats hows thats theres okay ok hey hi
    hello thanks thank doesnt dont cant isnt arent wont
    """
)
# Verbs that only say "please answer": no content of the question in them.
_REQUEST = _words(
    """
    write find give show tell explain make create generate provide describe get calculate
    compute recommend suggest need want help draft compose walk steps step convert
    """
)
_NEGATORS = _words("not no never none nothing nobody nowhere neither nor cannot without unable")
_NEG_CONTRACTIONS = _words(
    "dont doesnt didnt cant couldnt wont wouldnt shouldnt isnt arent wasnt werent"
)

# Canonical names for things written several ways, so "JS" matches "JavaScript" and
# "French" matches "France". Applied to entities and to the word sets they are looked
# up in.
_ALIASES: dict[str, str] = {
    "js": "javascript",
    "ts": "typescript",
    "golang": "go",
    "py": "python",
    "postgres": "postgresql",
    "psql": "postgresql",
    "k8s": "kubernetes",
    "c#": "csharp",
    "c++": "cpp",
    "f#": "fsharp",
    "node.js": "nodejs",
    "osx": "macos",
    "macbook": "macos",
    "america": "usa",
    "american": "usa",
    "americans": "usa",
    "u.k": "uk",
    "britain": "uk",
    "british": "uk",
    "english": "england",
    "nyc": "new_york",
    "mandarin": "china",
    "hebrew": "israel",
    "argentinian": "argentina",
    "argentine": "argentina",
    "filipino": "philippines",
    "dutch": "netherlands",
    "swiss": "switzerland",
    "thai": "thailand",
}
# Short month and day names ("Oct", "Fri") are the names.
_CALENDAR = _words(
    """
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday
    """
)
for _full in _CALENDAR - {"may"}:
    _ALIASES[_full[:3]] = _full
_ALIASES |= {"sept": "september", "tues": "tuesday", "thur": "thursday", "thurs": "thursday"}
for _country, _adjectives in {
    "france": "french",
    "germany": "german",
    "spain": "spanish",
    "italy": "italian",
    "portugal": "portuguese",
    "japan": "japanese",
    "china": "chinese",
    "korea": "korean",
    "russia": "russian",
    "india": "indian",
    "canada": "canadian",
    "mexico": "mexican",
    "brazil": "brazilian",
    "australia": "australian",
    "sweden": "swedish",
    "norway": "norwegian",
    "denmark": "danish",
    "finland": "finnish",
    "poland": "polish",
    "turkey": "turkish",
    "greece": "greek",
    "ireland": "irish",
    "austria": "austrian",
    "belgium": "belgian",
    "egypt": "egyptian",
    "vietnam": "vietnamese",
    "indonesia": "indonesian",
    "pakistan": "pakistani",
    "nigeria": "nigerian",
    "kenya": "kenyan",
    "israel": "israeli",
    "ukraine": "ukrainian",
    "chile": "chilean",
    "peru": "peruvian",
    "colombia": "colombian",
    "iceland": "icelandic",
    "scotland": "scottish",
    "wales": "welsh",
    "europe": "european",
    "africa": "african",
    "asia": "asian",
}.items():
    for _adj in _adjectives.split():
        _ALIASES[_adj] = _country
# Only in capitals: "US" is the country, "us" the pronoun.
_CASED_ALIASES = {"US": "usa", "U.S": "usa", "USA": "usa", "UK": "uk", "Mac": "macos"}

# Multi-word names, matched on lower-cased word sequences and replaced by one key.
_MULTI: dict[tuple[str, ...], str] = {
    tuple(k.split()): v
    for k, v in {
        "united states": "usa",
        "united states of america": "usa",
        "united kingdom": "uk",
        "great britain": "uk",
        "new york city": "new_york",
        "new york": "new_york",
        "los angeles": "los_angeles",
        "san francisco": "san_francisco",
        "san diego": "san_diego",
        "las vegas": "las_vegas",
        "mexico city": "mexico_city",
        "hong kong": "hong_kong",
        "new zealand": "new_zealand",
        "new delhi": "new_delhi",
        "south africa": "south_africa",
        "south korea": "korea",
        "north korea": "north_korea",
        "saudi arabia": "saudi_arabia",
        "sri lanka": "sri_lanka",
        "costa rica": "costa_rica",
        "buenos aires": "buenos_aires",
        "rio de janeiro": "rio_de_janeiro",
        "sao paulo": "sao_paulo",
        "czech republic": "czechia",
        "cape town": "cape_town",
        "abu dhabi": "abu_dhabi",
        "kuala lumpur": "kuala_lumpur",
        "tel aviv": "tel_aviv",
        "washington dc": "washington_dc",
        "c sharp": "csharp",
        "visual studio code": "vscode",
        "vs code": "vscode",
        "node js": "nodejs",
        "ruby on rails": "rails",
    }.items()
}

_MULTI_FIRST = frozenset(k[0] for k in _MULTI)

# Names recognised in any case (people type "python" and "paris" in lower case):
# software, formats, protocols, places and languages whose names are not everyday words.
_GAZETTEER = _words(
    """
    python javascript typescript java kotlin scala haskell erlang elixir clojure ocaml
    fortran cobol pascal perl php lua matlab csharp cpp fsharp sql mysql postgresql sqlite
    mongodb redis cassandra elasticsearch kafka rabbitmq nginx apache docker kubernetes
    terraform ansible jenkins linux ubuntu debian fedora centos windows macos ios android
    iphone ipad chromebook powerpoint outlook onedrive pandas numpy scipy matplotlib
    sklearn tensorflow pytorch keras django flask fastapi nodejs npm webpack nextjs vue
    svelte jquery tailwind git github gitlab bitbucket aws azure gcp heroku vercel s3 ec2
    boto3 bash zsh powershell vim neovim emacs nano vscode intellij pycharm xcode firefox
    html css json yaml xml csv toml markdown pdf docx xlsx graphql grpc http https tcp udp
    ssh ftp dns tls ssl oauth jwt cors
    usa uk england scotland wales ireland france germany spain italy portugal netherlands
    belgium switzerland austria sweden norway denmark finland iceland poland greece turkey
    russia ukraine czechia hungary romania bulgaria croatia serbia japan china korea
    north_korea india pakistan bangladesh nepal sri_lanka thailand vietnam cambodia laos
    malaysia singapore indonesia philippines australia new_zealand canada mexico brazil
    argentina chile peru colombia venezuela ecuador bolivia cuba jamaica egypt morocco
    tunisia algeria nigeria kenya ethiopia ghana tanzania south_africa israel iran iraq
    syria lebanon saudi_arabia qatar uae europe asia africa antarctica oceania
    paris london rome milan venice florence naples madrid barcelona seville lisbon porto
    berlin munich hamburg frankfurt vienna prague budapest warsaw krakow amsterdam
    brussels zurich geneva stockholm oslo copenhagen helsinki reykjavik dublin edinburgh
    glasgow manchester liverpool athens istanbul moscow kyiv tokyo kyoto osaka seoul
    beijing shanghai hong_kong taipei bangkok hanoi jakarta bali manila mumbai delhi
    new_delhi bangalore sydney melbourne brisbane perth auckland toronto vancouver
    montreal ottawa calgary new_york los_angeles san_francisco san_diego las_vegas chicago
    boston seattle miami orlando houston dallas austin denver atlanta detroit philadelphia
    phoenix washington_dc mexico_city cancun lima bogota santiago buenos_aires
    rio_de_janeiro sao_paulo cairo marrakech nairobi cape_town lagos dubai abu_dhabi doha
    tel_aviv jerusalem kuala_lumpur california texas florida nevada hawaii alaska oregon
    arizona colorado georgia ohio michigan illinois massachusetts virginia utah
    mercury venus mars jupiter saturn uranus neptune pluto
    arabic hindi bengali urdu swahili latin esperanto
    """
)
# Names that are also everyday words ("go", "rust", "edge"): names only when capitalised
# in the middle of a sentence.
_CASED_ONLY = _words(
    """
    go rust swift ruby dart julia spring express react word excel edge chrome safari fish
    lambda rest angular bootstrap yarn vite
    """
)
_TITLES = _words("mount mt lake river the of mr mrs ms dr saint st sir president king queen")
_I_FORMS = frozenset(f"I I{q}m I{q}d I{q}ve I{q}ll" for q in "'\u2019") | {"I"}

# Units and their canonical names. Time units are everyday words ("per day"), so the
# unit check compares them apart from the others.
_UNIT_WORDS: dict[str, str] = {}
for _canon, _spellings in {
    "percent": "% percent pct percentage",
    "mm": "mm millimeter millimeters millimetre millimetres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "metre": "meter meters metre metres",
    "km": "km kms kilometer kilometers kilometre kilometres",
    "inch": "inch inches",
    "foot": "ft foot feet",
    "yard": "yard yards yd yds",
    "mile": "mile miles mi",
    "mg": "mg milligram milligrams",
    "gram": "gram grams",
    "kg": "kg kgs kilo kilos kilogram kilograms",
    "lb": "lb lbs pound pounds",
    "ounce": "oz ounce ounces",
    "ton": "ton tons tonne tonnes",
    "ml": "ml milliliter milliliters millilitre millilitres",
    "litre": "liter liters litre litres",
    "gallon": "gallon gallons gal",
    "quart": "quart quarts qt",
    "pint": "pint pints",
    "cup": "cup cups",
    "tbsp": "tbsp tablespoon tablespoons",
    "tsp": "tsp teaspoon teaspoons",
    "celsius": "celsius centigrade °c",
    "fahrenheit": "fahrenheit °f",
    "kelvin": "kelvin kelvins",
    "degree": "degree degrees",
    "usd": "$ usd dollar dollars bucks",
    "eur": "€ eur euro euros",
    "gbp": "£ gbp sterling",
    "jpy": "¥ jpy yen",
    "inr": "₹ inr rupee rupees",
    "btc": "btc bitcoin bitcoins",
    "bit": "bit bits",
    "byte": "byte bytes",
    "kb": "kb kilobyte kilobytes",
    "mb": "mb megabyte megabytes",
    "gb": "gb gigabyte gigabytes",
    "tb": "tb terabyte terabytes",
    "mph": "mph",
    "kmh": "kph kmh km/h",
    "knot": "knot knots",
    "calorie": "calorie calories kcal cal",
    "joule": "joule joules",
    "watt": "watt watts",
    "kw": "kw kilowatt kilowatts",
    "kwh": "kwh",
    "volt": "volt volts",
    "sentence": "sentence sentences",
    "paragraph": "paragraph paragraphs",
    "word": "words",
    "page": "page pages",
    "line": "lines",
    "character": "character characters chars",
    "second": "second seconds sec secs",
    "minute": "minute minutes min mins",
    "hour": "hour hours hr hrs",
    "day": "day days",
    "week": "week weeks",
    "month": "month months",
    "year": "year years yr yrs",
    "decade": "decade decades",
    "century": "century centuries",
    "ms": "ms millisecond milliseconds",
}.items():
    for _w in _spellings.split():
        _UNIT_WORDS[_w] = _canon
_TIME_UNITS = _words("second minute hour day week month year decade century ms")
_TEMPERATURES = _words("celsius fahrenheit kelvin")
_LETTER_TEMPS = {"c": "celsius", "f": "fahrenheit", "k": "kelvin"}
_CURRENCY_SIGNS = frozenset("$€£¥₹")
# Letters that are units only when glued to a number: "3h", "10k", "9am", "2x".
_SUFFIX_UNITS = {"h": "hour", "s": "second", "m": "m", "g": "gram", "l": "litre"}
_SUFFIX_UNITS |= {"c": "celsius", "f": "fahrenheit", "k": "k", "x": "x"}
_MERIDIEM = {"am": "am", "pm": "pm", "a.m": "am", "p.m": "pm"}

_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_SCALES |= {"trillion": 10**12}
_NUM_WORDS = {
    w: i
    for i, w in enumerate(
        _seq(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen"
        )
    )
}
_TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate(_seq("twenty thirty forty fifty sixty seventy eighty ninety"))
}
_NUMBER_PARTS = frozenset(_NUM_WORDS) | frozenset(_TENS) | frozenset(_SCALES) | {"and"}
_ORDINAL_WORDS = {
    w: i + 1
    for i, w in enumerate(
        _seq("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth")
    )
}
_ORDINAL_SUFFIX = _words("st nd rd th")
_ROMAN = {"ii": 2, "iii": 3, "iv": 4, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "xi": 11, "xii": 12}

# Arithmetic and calculus. Both sides naming an operation the other lacks ("sum" vs
# "product", "+" vs "-", "derivative" vs "integral") is another question.
_OPS: dict[str, str] = {}
for _canon, _spellings in {
    "add": "+ plus sum add adding added increase increased",
    "sub": "- \u2212 minus subtract subtracted subtracting difference decrease decreased",
    "mul": "* \u00d7 x multiplied multiply multiplying product times",
    "div": "÷ divided divide dividing quotient over",
    "pow": "^ ** power squared cubed exponent",
    "sqrt": "sqrt √",
    "cbrt": "cbrt",
    "mean": "average mean",
    "median": "median",
    "mode": "mode",
    "deriv": "derivative derivatives differentiate",
    "integ": "integral integrals integrate antiderivative",
    "log": "log logarithm ln",
    "sin": "sin sine",
    "cos": "cos cosine",
    "tan": "tan tangent",
    "factorial": "factorial",
    "mod": "mod modulo remainder",
    "gcd": "gcd gcf",
    "lcm": "lcm",
}.items():
    for _w in _spellings.split():
        _OPS[_w] = _canon
# Everyday words that are operations only in a question with a number in it.
_OPS_NEED_NUMBER = _words(
    "add adding added sum increase increased difference decrease decreased product mode "
    "log mean average power over times x tangent remainder"
)
_OPS_BETWEEN_NUMBERS = _words("times over x")  # "7 times 8", not "how many times"
_NONCOMMUTATIVE = _words("sub div pow mod")

# Contrast axes: (axis, pole). Two sides on the same axis with different poles ask
# opposite things ("ascending" / "descending", "install" / "uninstall").
_POLES: dict[str, tuple[str, str]] = {}
for _axis, _plus, _minus in (
    ("size", "big bigger biggest large larger largest huge", "small smaller smallest tiny"),
    ("height", "tall taller tallest high higher highest", "short shorter shortest low lowest"),
    ("quality", "best better good great", "worst worse bad"),
    ("amount", "more most maximum max", "less least fewer fewest minimum min"),
    (
        "change",
        "increase increasing raise gain gaining improve improving boost enhance",
        "decrease decreasing reduce reducing lose lower",
    ),
    ("speed", "fast faster fastest quick quicker quickest quickly", "slow slower slowest slowly"),
    ("price", "expensive pricey costly", "cheap cheaper cheapest inexpensive affordable"),
    ("distance", "far farther farthest further furthest", "close closer closest near nearest"),
    ("temperature", "hot hotter hottest warm warmer", "cold colder coldest cool cooler"),
    ("age", "old older oldest", "new newer newest young younger youngest"),
    ("time", "early earlier earliest", "late later latest"),
    ("phase", "start starts started begin begins began beginning", "end ends ended finish"),
    ("build", "build built construct constructed", "fall fell demolish demolished torn"),
    ("acceptance", "accept accepting accepted", "decline declining declined reject"),
    ("install", "install installing installed", "uninstall uninstalling uninstalled"),
    ("transfer", "upload uploading uploaded", "download downloading downloaded"),
    ("io", "read reading load loading import importing", "write writing save saving export"),
    ("crypto", "encrypt encrypting encrypted", "decrypt decrypting decrypted"),
    ("coding", "encode encoding encoded", "decode decoding decoded"),
    ("compress", "compress compressing compressed", "decompress decompressing unzip"),
    ("enable", "enable enabling enabled", "disable disabling disabled"),
    ("add", "add adding added insert create", "remove removing removed delete deleting deleted"),
    ("open", "open opening opened", "close closing closed"),
    ("git", "push pushing pushed", "pull pulling pulled"),
    ("trade", "buy buying bought purchase", "sell selling sold"),
    ("win", "win winning won", "losing lost"),
    ("order", "ascending", "descending"),
    ("parity", "even", "odd"),
    ("sign", "signed", "unsigned"),
    ("register", "formal", "casual informal"),
    ("seniority", "senior", "junior"),
    ("term", "long-term", "short-term"),
    ("meridiem", "am", "pm"),
    ("polarity", "positive", "negative"),
    ("truth", "true", "false"),
    ("merit", "pros advantages benefits", "cons disadvantages drawbacks risks"),
    ("safety", "safe safely", "unsafe dangerous harmful"),
    ("legal", "legal", "illegal"),
    ("health", "healthy", "unhealthy"),
    ("affect", "love loves loving", "hate hates hating"),
    ("phase2", "boiling boil boils", "freezing freeze freezes"),
    ("side", "left", "right"),
    ("axis", "horizontal horizontally", "vertical vertically"),
    ("compass", "north northern", "south southern"),
    ("compass2", "east eastern", "west western"),
    ("above", "above", "below"),
    ("before", "before", "after"),
    ("firmness", "runny soft", "firm hard"),
    ("inner", "inner", "outer"),
    ("case", "uppercase", "lowercase"),
    ("sync", "synchronous sync", "asynchronous async"),
    ("client", "client", "server"),
    ("front", "frontend front-end", "backend back-end"),
):
    for _w in _plus.split():
        _POLES[_w] = (_axis, "+")
    for _w in _minus.split():
        _POLES[_w] = (_axis, "-")
_GRADABLE = _words("size height quality amount speed price distance temperature age time")

# Wh-words that ask for a different kind of answer. "what", "which" and a bare "how"
# are too freely interchanged in paraphrases to compare.
_QTYPES = _words("why when where who")
_HOW = {"much": "how much", "many": "how much", "long": "how long", "far": "how far"}
_HOW |= {"old": "how old", "tall": "how tall", "high": "how tall", "big": "how big"}
_HOW |= {"large": "how big", "often": "how often"}

# Words a paraphrase swaps freely, keyed to one stem before words are compared.
_SYNONYMS: dict[str, str] = {}
for _group in (
    "write compos draft creat generat produc craft mak",
    "explain describ clarify tell",
    "fix repair resolv solv",
    "quick fast rapid speedy",
    "big larg",
    "small littl tiny",
    "start begin",
    "buy purchas",
    "show display",
    "calculat comput determin find work",
    "quit exit",
    "autumn fall",
    "tire tyr",
    "way method",
    "recip instruction",
    "wrot author",
    "height elevation",
    "movy film",
    "calory calori",
    "meaning purpos",
    "person people",
):
    _keys = _group.split()
    for _k in _keys:
        _SYNONYMS[_k] = _keys[0]

_DETERMINERS = _words("a an the my your our their his her its this that some")
_TO_CUES = _words("to into -> → =>")
_SKIP = _DETERMINERS | {"°"}  # between a cue and its object: "to the", "to °F"


# --------------------------------------------------------------------------- signature


@dataclass(frozen=True, slots=True)
class Signature:
    """What a question says beyond its embedding; compared by :func:`check`."""

    numbers: frozenset[tuple[str, str]]  # (value, unit glued to it or "")
    number_order: tuple[str, ...]  # values in reading order, for non-commutative operations
    noncommutative: bool
    ordinals: frozenset[int]
    ops: frozenset[str]
    quoted: tuple[str, ...]  # quoted spans and code, as normalised words
    code: tuple[str, ...]  # `code` and ``` blocks, verbatim but for whitespace
    identifiers: frozenset[str]
    entities: frozenset[str]
    words: frozenset[str]  # every normalised word, alias and unit, for presence look-ups
    text: str  # normalised word sequence with spaces around, for quoted-span look-ups
    raw: str  # the text with whitespace collapsed, for code look-ups
    negated: bool
    roles: frozenset[tuple[str, str]]  # (token, "src" | "tgt" | "obj")
    poles: frozenset[tuple[str, str]]  # (axis, "+" | "-")
    units: frozenset[str]
    qtype: str
    content: frozenset[str]  # content-word keys (stems, synonym groups, poles)
    frame: tuple[str, ...]  # the word sequence as keys, quantities as "#"
    align: align.Features = align.EMPTY  # words as the alignment guard compares them
    formats: frozenset[str] = frozenset()  # shapes of written-out numerals: "(ddd) ddd-dddd"
    parsed: bool = True  # False: the parser failed and this is the fallback


def _fallback(text: object) -> Signature:
    """A signature that agrees only with the very same text (the quoted-span check)."""
    try:
        s = " ".join(str(text).lower().split())[:MAX_CHARS]
    except Exception:
        s = ""
    return Signature(
        numbers=frozenset(),
        number_order=(),
        noncommutative=False,
        ordinals=frozenset(),
        ops=frozenset(),
        quoted=(s,),
        code=(),
        identifiers=frozenset(),
        entities=frozenset(),
        words=frozenset(),
        text=f" {s} ",
        raw=s,
        negated=False,
        roles=frozenset(),
        poles=frozenset(),
        units=frozenset(),
        qtype="",
        content=frozenset(),
        frame=(),
        parsed=False,
    )


def signature(text: str) -> Signature:
    """Features of one question. Never raises."""
    try:
        return _Parser(text).signature()
    except Exception:  # a verifier bug must cost a miss, never a request
        return _fallback(text)


def clear_caches() -> None:
    """Forget every cached word fact, the parser's and the lexicon's (the benchmark's
    cold start; tests that change what the lexicon knows)."""
    for fn in (_norm_word, _content_key, _names, _looks_like_identifier, _align_words):
        fn.cache_clear()
    lexicon.clear_caches()


def signatures(texts: Iterable[str]) -> list[Signature]:
    return [signature(t) for t in texts]


_TOKEN_RE = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)[^\s<>"'`]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
  | (?P<ext>(?<![\w.])\.[A-Za-z][A-Za-z0-9]{0,6}(?![\w.]))
  | (?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
  | (?P<word>[^\W\d_](?:\w|['\u2019\-/](?=\w)|\.(?=[^\W\d_])|::(?=\w))*(?:\+\+|\#)?(?:\(\))?)
  | (?P<sym>\*\*|->|=>|[%$€£¥₹°+\-\u2212*/^=<>→\u00d7÷√'"])
    """,
    re.VERBOSE,
)
_QUOTE_RE = re.compile(
    r"""```(?P<fence>.*?)```|`(?P<tick>[^`\n]+)`|“(?P<dq>[^”]{1,400})”|\u2018(?P<sq>[^\u2019]{1,400})\u2019
    |(?<!\w)"(?P<plain>[^"\n]{1,400})"|(?<![\w'])'(?P<single>[^'\n]{1,400}?)'(?!\w)""",
    re.VERBOSE | re.DOTALL,
)
_PARTS_RE = re.compile(r"[-/]")
_CAMEL_RE = re.compile(r"[a-z][A-Z]|[A-Z]{2,}[a-z]")
_INNER_CAMEL_RE = re.compile(r"[a-z][A-Z]")
_TRAILING = ".'\u2019-/"  # not part of a word at its end
_SENTENCE_BREAK = frozenset(".!?:;\n\"'“\u2018([)\u2014\u2013\u2022")


@dataclass(slots=True)
class _Tok:
    kind: str  # url | ext | num | word | sym
    raw: str
    low: str
    start: int
    end: int
    initial: bool  # first word of a sentence: its capital says nothing


def _tokens(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    prev_end = 0
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup or "sym"
        raw = m.group()
        if kind == "word" and raw[-1] in _TRAILING:
            raw = raw.rstrip(_TRAILING) or raw
        raw_gap = text[prev_end : m.start()]
        gap = raw_gap.strip()
        if not toks or "\n" in raw_gap:
            initial = True
        elif gap:
            initial = gap[-1] in _SENTENCE_BREAK
        else:
            # after an opening quote, or a bullet that starts a line ("- I'm ...")
            prev = toks[-1]
            initial = prev.kind == "sym" and (
                prev.raw in "'\"(" or (prev.raw in "-*>" and prev.initial)
            )
        toks.append(_Tok(kind, raw, raw.lower(), m.start(), m.start() + len(raw), initial))
        prev_end = m.end()
    return toks


@lru_cache(maxsize=1 << 14)
def _norm_word(w: str) -> str:
    """Lower-case word without possessive or plural, for presence look-ups."""
    w = w.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    elif w.endswith("s'"):
        w = w[:-1]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "xes", "sses", "zes", "oes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


@lru_cache(maxsize=1 << 14)
def _content_key(w: str) -> str:
    """A word as the content guards compare it: its contrast pole, operation, or
    light stem mapped to a synonym group ("running" ~ "run", "compose" ~ "write")."""
    pole = _POLES.get(w)
    if pole is not None:
        return pole[0] + pole[1]
    op = _OPS.get(w)
    if op is not None:
        return op
    st = _norm_word(w)
    for suf in ("ingly", "edly", "ing", "ed", "ly", "er", "est", "ation", "ment", "ness"):
        if len(st) > len(suf) + 3 and st.endswith(suf):
            st = st[: -len(suf)]
            if len(st) > 3 and st[-1] == st[-2] and st[-1] not in "aeiouls":
                st = st[:-1]  # "running" -> "run"
            break
    if len(st) > 4:
        st = st.rstrip("e")
    return _SYNONYMS.get(st, st)


def _fmt(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _dec(s: str) -> Decimal | None:
    try:
        d = Decimal(s.replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _word_number(parts: list[str]) -> int | None:
    """Value of "one hundred forty four" / "twenty-five"; None when not a number."""
    total = current = 0
    seen = False
    for p in parts:
        if p in _NUM_WORDS:
            current += _NUM_WORDS[p]
        elif p in _TENS:
            current += _TENS[p]
        elif p == "hundred" and seen:
            current = max(current, 1) * 100
        elif p in _SCALES and seen:
            total += max(current, 1) * _SCALES[p]
            current = 0
        elif p == "and" and seen:
            continue
        else:
            return None
        seen = True
    return total + current if seen else None


@lru_cache(maxsize=1 << 14)
def _names(raw: str, initial: bool, caps_mean: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Word forms and names in one word; "Paris-Rome", "apps/sites": each part counts.
    Cached: the same words come back in text after text."""
    words: list[str] = []
    names: list[str] = []
    parts = _PARTS_RE.split(raw)
    for k, part in enumerate(parts):
        if not part:
            continue
        # "Kubernetes", "Postgres": a known name keeps its final s
        pnorm = part.lower() if part.lower() in _GAZETTEER else _norm_word(part)
        pkey = _CASED_ALIASES.get(part) or _ALIASES.get(part.lower()) or _ALIASES.get(pnorm)
        pkey = pkey or pnorm
        if len(parts) > 1:
            words += (pnorm, pkey)
        if _is_entity(part, pkey, initial and k == 0, caps_mean):
            names.append(pkey)
    return tuple(words), tuple(names)


def _is_entity(raw: str, key: str, initial: bool, caps_mean: bool) -> bool:
    low = raw.lower()
    if low in _ORDINAL_WORDS or low in _UNIT_WORDS or low in _NEGATORS or low in _OPS:
        return False
    if key in _GAZETTEER or low in _GAZETTEER:
        return low not in _CASED_ONLY or (raw[:1].isupper() and not initial)
    if raw in _CASED_ALIASES:
        return True
    if raw in _I_FORMS or not raw[:1].isalpha():
        return False
    if raw[:1].islower():
        return bool(_CAMEL_RE.search(raw))  # iPhone, macOS, eBay
    if not caps_mean:
        return False
    if len(raw) > 1 and (raw.isupper() or _CAMEL_RE.search(raw)):
        return True  # acronyms and inner capitals: API, GDP, JavaScript
    # A capital mid-sentence is a name; at the start of a sentence it says nothing.
    return not initial and _norm_word(raw) not in _TITLES


# A date or time format written with letter codes: dd/MM/yyyy, HH:mm.
_FORMAT_CODE_RE = re.compile(
    r"(?i)^(?:d{1,4}|m{1,4}|y{2,4}|h{1,2}|s{1,2})(?:[/.:\-](?:d{1,4}|m{1,4}|y{2,4}|h{1,2}|s{1,2}))+$"
)


@lru_cache(maxsize=1 << 14)
def _looks_like_identifier(raw: str) -> bool:
    """file.py, os.path, snake_case, call(), s3, a380, utf8, getElementById, a date
    format (dd/MM/yyyy)."""
    if _FORMAT_CODE_RE.match(raw):
        return True
    if len(raw) < 2 or raw.isalpha():
        return raw[:1].islower() and bool(_INNER_CAMEL_RE.search(raw)) and len(raw) > 6
    if "_" in raw or "::" in raw or raw.endswith("()"):
        return True
    if "." in raw.strip("."):
        # "os.path", "node.js", "index.html"; not "M.Tech", "U.S", "e.g"
        return len(raw.split(".", 1)[0]) > 1
    if "/" in raw:
        # "src/main", "/usr/bin"; not "is/are", "apps/sites" (alternatives)
        return not all(part.isalpha() or not part for part in raw.split("/"))
    return raw[0].isalpha() and any(c.isdigit() for c in raw)


class _Parser:
    """One pass over one text; the result is frozen into a Signature."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            text = str(text)
        text = unicodedata.normalize("NFKC", text)
        if len(text) > MAX_CHARS:
            # The question usually sits at the start or the end of a long prompt.
            text = text[: MAX_CHARS // 2] + "\n" + text[-MAX_CHARS // 2 :]
        self.text = text
        self.toks = _tokens(text)
        self.low = [t.low for t in self.toks]
        self.n = len(self.toks)
        self.numbers: list[tuple[str, str]] = []
        self.number_order: list[str] = []
        self.number_at: set[int] = set()  # token indexes inside a quantity
        self.unit_at: dict[int, str] = {}  # token index -> canonical unit
        self.canon_at: dict[int, str] = {}  # token index -> key used by roles
        self.multi_at: set[int] = set()  # tokens inside a multi-word name
        self.name_at: dict[int, tuple[str, ...]] = {}  # token index -> names in it
        self.value_at: dict[int, str] = {}  # first token of a quantity -> its value
        self.ordinal_at: dict[int, int] = {}  # token index -> ordinal: "2nd", "second", "II"
        self.units: set[str] = set()
        self.ops: set[str] = set()
        self.poles: set[tuple[str, str]] = set()
        self.entities: set[str] = set()
        self.identifiers: set[str] = set()
        self.words: set[str] = set()
        self.content: set[str] = set()
        self.negations = 0

    def signature(self) -> Signature:
        quoted: list[str] = []
        code: list[str] = []
        for m in _QUOTE_RE.finditer(self.text):
            span = next((g for g in m.groups() if g is not None), "")
            qwords = [t.low for t in _tokens(span) if t.kind != "sym"]
            if qwords:
                quoted.append(" ".join(qwords))
            if m.group("fence") is not None or m.group("tick") is not None:
                # In code every symbol counts: "y +" and "y -" are different programs.
                code.append(" ".join(span.split()))
        self._scan_numbers()
        self._scan_names()
        self._scan_words()
        self._phrases()
        if not self.numbers and not self.number_order:
            # "what is the difference", "dark mode": not arithmetic without a number.
            self.ops -= {_OPS[w] for w in self.low if w in _OPS_NEED_NUMBER}
        return Signature(
            numbers=frozenset(self.numbers),
            number_order=tuple(self.number_order),
            noncommutative=bool(self.ops & _NONCOMMUTATIVE),
            ordinals=frozenset(self.ordinal_at.values()),
            ops=frozenset(self.ops),
            quoted=tuple(dict.fromkeys(quoted)),
            code=tuple(dict.fromkeys(c for c in code if c)),
            identifiers=frozenset(self.identifiers),
            entities=frozenset(self.entities),
            words=frozenset(self.words),
            text=" " + " ".join(t.low for t in self.toks if t.kind != "sym") + " ",
            raw=" ".join(self.text.split()),
            negated=self.negations > 0,
            roles=frozenset(self._roles()),
            poles=frozenset(self.poles),
            units=frozenset(self.units),
            qtype=self._qtype(),
            content=frozenset(self.content),
            frame=self._frame(),
            align=self._align(),
            formats=frozenset(
                shape
                for m in _FORMATTED_RE.finditer(self.text)
                if (shape := _shape(m.group())) != "d.d"  # a decimal number, not a format
            ),
        )

    # ---- quantities

    def _attached_unit(self, j: int) -> tuple[str, int]:
        """The unit written right after a quantity whose last token is j - 1: "5 kg",
        "3h", "10-year-old", "100°F", "100 degrees F", "9 am", "50 US dollars", "5'".
        Returns the canonical unit ("" if none) and the index after it."""
        toks, n = self.toks, self.n
        if j >= n:
            return "", j
        nxt = toks[j]
        glued = nxt.start == toks[j - 1].end
        low = nxt.low
        if nxt.kind == "sym":
            if low == "-" and glued and j + 1 < n and toks[j + 1].start == nxt.end:
                first = toks[j + 1].low.split("-")[0]  # "10-year-old", "3-day"
                unit = _UNIT_WORDS.get(first) or _UNIT_WORDS.get(_norm_word(first), "")
                return (unit, j + 2) if unit and toks[j + 1].kind == "word" else ("", j)
            if low == "°":
                if j + 1 < n and toks[j + 1].low in _LETTER_TEMPS:
                    return _LETTER_TEMPS[toks[j + 1].low], j + 2
                return "degree", j + 1
            if low == "%":
                return "percent", j + 1
            if glued and low in ("'", '"'):
                return ("foot" if low == "'" else "inch"), j + 1
            return "", j
        if nxt.kind != "word":
            return "", j
        after = toks[j + 1].low if j + 1 < n else ""
        if low in _MERIDIEM:
            return _MERIDIEM[low], j + 1
        if glued and low in _SUFFIX_UNITS:
            return _SUFFIX_UNITS[low], j + 1
        if low in ("degree", "degrees"):
            if after in ("c", "f"):
                return _LETTER_TEMPS[after], j + 2
            if _UNIT_WORDS.get(after) in _TEMPERATURES:
                return _UNIT_WORDS[after], j + 2
        if low in ("c", "f") and nxt.raw.isupper():
            return _LETTER_TEMPS[low], j + 1
        if low in ("us", "u.s") and _UNIT_WORDS.get(after) == "usd":
            return "usd", j + 2
        if low == "per" and after == "cent":
            return "percent", j + 2
        if low == "fluid" and _UNIT_WORDS.get(after) == "ounce":
            return "ounce", j + 2
        return _UNIT_WORDS.get(low, ""), j + (low in _UNIT_WORDS)

    def _add_number(self, value: Decimal, unit: str, i: int, j: int) -> None:
        if unit == "k":  # "10k" is ten thousand
            value, unit = value * 1000, ""
        if unit in ("am", "pm"):
            self.poles.add(("meridiem", "+" if unit == "am" else "-"))
            unit = "clock"
        if not unit and i > 0 and self.low[i - 1] in _CURRENCY_SIGNS:
            unit = _UNIT_WORDS[self.low[i - 1]]
        if unit and unit not in ("x", "m", "clock"):
            self.units.add(unit)
            self.words.add(unit)
        v = _fmt(value)
        self.value_at[i] = v
        self.number_order.append(v)
        # "1 kg", "one kilogram" and "a kilogram" ask the same: a one carries nothing the
        # unit does not, and "a"/"an" is not a number here.
        if v != "1":
            self.numbers.append((v, unit))
        self.number_at.update(range(i, j))
        if unit and j - 1 > i:
            self.unit_at[j - 1] = unit

    def _enumerator(self, i: int) -> bool:
        t = self.toks[i]
        line_start = i == 0 or "\n" in self.text[self.toks[i - 1].end : t.start]
        return line_start and self.text[t.end : t.end + 2] in (". ", ") ", ".\t")

    def _scan_numbers(self) -> None:
        toks, low, n = self.toks, self.low, self.n
        i = 0
        while i < n:
            t = toks[i]
            if t.kind == "num" and self._enumerator(i):
                self.number_at.add(i)  # "1. ", "2) " at the start of a line: a list item
                i += 1
                continue
            if t.kind == "num":
                j = i + 1
                value = _dec(t.raw)
                if j < n and low[j] in _ORDINAL_SUFFIX and toks[j].start == t.end:
                    if value is not None and value == value.to_integral_value():
                        self.ordinal_at[i] = int(value)  # "2nd"
                    self.number_at.update((i, j))
                    i = j + 1
                    continue
                if value is not None and j < n and low[j] in _SCALES:
                    value *= _SCALES[low[j]]
                    j += 1
                unit, j = self._attached_unit(j)
                if value is not None:
                    self._add_number(value, unit, i, j)
                i = max(j, i + 1)
                continue
            if t.kind == "word" and (low[i] in _NUMBER_PARTS or "-" in low[i]):
                parts: list[str] = []
                j = i
                while j < n and toks[j].kind == "word":
                    sub = low[j].split("-")
                    if not all(p in _NUMBER_PARTS for p in sub):
                        break
                    parts.extend(sub)
                    j += 1
                while parts and parts[-1] == "and":
                    parts.pop()
                    j -= 1
                value_w = _word_number(parts) if parts else None
                if value_w is not None:
                    unit, j2 = self._attached_unit(j)
                    # A lone "one" is a pronoun more often than a number ("which one").
                    if parts != ["one"] or unit:
                        self._add_number(Decimal(value_w), unit, i, j2)
                    i = max(j2, i + 1)
                    continue
            if t.kind == "word" and low[i] in ("half", "dozen"):
                self._add_number(Decimal("0.5" if low[i] == "half" else "12"), "", i, i + 1)
            i += 1

    # ---- words

    def _scan_names(self) -> None:
        """Multi-word names first, so "New York" is one key, not "new" + "york"."""
        low, i = self.low, 0
        while i < self.n:
            if low[i] not in _MULTI_FIRST:
                i += 1
                continue
            for size in (4, 3, 2):
                key = _MULTI.get(tuple(low[i : i + size]))
                if key is not None and all(t.kind == "word" for t in self.toks[i : i + size]):
                    self.entities.add(key)
                    self.words.add(key)
                    self.content.add(key)
                    self.canon_at[i] = key
                    self.multi_at.update(range(i, i + size))
                    i += size
                    break
            else:
                i += 1

    def _scan_words(self) -> None:
        toks, low = self.toks, self.low
        letters = [t for t in toks if t.kind == "word" and t.raw[:1].isalpha()]
        caps = sum(1 for t in letters if t.raw[:1].isupper())
        # Title Case or SHOUTING: capitals carry no information about names.
        caps_mean = not (len(letters) >= 4 and caps / len(letters) > 0.6) and any(
            c.islower() for c in self.text
        )
        temp_context = bool(self.units & _TEMPERATURES) or "degrees" in low or "degree" in low
        prev = ""
        for i, t in enumerate(toks):
            w = low[i]
            if t.kind == "url":
                self.identifiers.add(w.rstrip("/.,)"))
                continue
            if t.kind == "ext":  # ".csv" and "a CSV file" name the same thing
                self.identifiers.add(w[1:])
                self.words.add(w[1:])
                self.canon_at[i] = w[1:]
                continue
            if t.kind == "sym":
                self._symbol(i, w)
                prev = w
                continue
            if t.kind != "word":
                continue
            norm = _norm_word(w)
            alias = _CASED_ALIASES.get(t.raw) or _ALIASES.get(w) or _ALIASES.get(norm)
            key = alias or norm
            self.words.update((w, norm))
            if alias:
                self.words.add(alias)
            if i in self.multi_at:
                continue
            self.canon_at[i] = key

            if (
                w in _NEGATORS or w in _NEG_CONTRACTIONS or w.endswith(("n't", "n\u2019t"))
            ) and not (w in ("not", "no") and prev in ("or", "why", "if")):
                self.negations += 1  # "X or not?", "why or why not" ask both ways
            self._pole(w, prev)
            op = _OPS.get(w)
            if op is not None and (w not in _OPS_BETWEEN_NUMBERS or (i - 1) in self.number_at):
                self.ops.add(op)
            if i not in self.number_at:
                self._unit_word(i, t, temp_context)
            if (
                w in _ORDINAL_WORDS
                and (i - 1) not in self.number_at
                and not (w == "second" and prev in ("a", "per", "one", "each", "every"))
            ):
                self.ordinal_at[i] = _ORDINAL_WORDS[w]
            # Roman numerals after a name are ordinals: "World War II", "Henry VIII".
            if (
                ((w in _ROMAN and t.raw.isupper()) or t.raw == "I")
                and i > 0
                and toks[i - 1].raw[:1].isupper()
                and not toks[i - 1].initial
            ):
                self.ordinal_at[i] = _ROMAN.get(w, 1)
                prev = w
                continue
            if i in self.number_at or i in self.unit_at:
                pass  # "100 °F", "50 US dollars": part of a quantity, not a name
            elif _looks_like_identifier(t.raw):
                self.identifiers.add(w)
            else:
                self._names_in(t, caps_mean, i)
            if w not in _STOP and w not in _REQUEST and len(w) > 1 and i not in self.number_at:
                self.content.add(_content_key(w))
            prev = w

    def _names_in(self, t: _Tok, caps_mean: bool, i: int) -> None:
        words, names = _names(t.raw, t.initial, caps_mean)
        if names:
            self.name_at[i] = names
        self.words.update(words)
        self.entities.update(names)
        self.content.update(names)

    def _unit_word(self, i: int, t: _Tok, temp_context: bool) -> None:
        w, low, n = t.low, self.low, self.n
        unit = _UNIT_WORDS.get(w)
        if w in ("degree", "degrees") and i + 1 < n and low[i + 1] in ("c", "f"):
            unit = None  # "degrees C": the letter names the unit
        if w in ("second", "min"):
            unit = None  # ordinal / minimum more often than a unit without a number
        if w in ("c", "f") and len(t.raw) == 1:
            # "convert C to F": letters are temperatures only around other temperatures
            near_to = (i > 0 and low[i - 1] in _TO_CUES) or (i + 1 < n and low[i + 1] in _TO_CUES)
            degree = i > 0 and low[i - 1] == "°"
            unit = (
                _LETTER_TEMPS[w]
                if temp_context or degree or (t.raw.isupper() and near_to)
                else None
            )
        if unit is not None:
            self.units.add(unit)
            self.words.add(unit)
            self.unit_at[i] = unit

    def _symbol(self, i: int, w: str) -> None:
        op = _OPS.get(w)
        toks = self.toks
        between = 0 < i < self.n - 1 and toks[i - 1].kind == "num" and toks[i + 1].kind == "num"
        if op is not None and w in ("-", "\u2212"):
            # A hyphen is subtraction when spaced ("25 - 7", "2x - 3") or between numbers.
            t = toks[i]
            spaced = self.text[t.start - 1 : t.start] == " " and self.text[t.end : t.end + 1] == " "
            if not (spaced or between):
                op = None
        if w == "/" and between:
            op = "div"
        elif op is not None and w not in ("-", "\u2212") and not self._near_operand(i):
            op = None  # a "*" footnote or a "+" in "C++ and more" is not arithmetic
        if op is not None:
            self.ops.add(op)
        if w in _CURRENCY_SIGNS:
            self.units.add(_UNIT_WORDS[w])
            self.words.add(_UNIT_WORDS[w])

    def _near_operand(self, i: int) -> bool:
        """A number or a one-letter variable right before or after token i."""
        for k in (i - 1, i + 1):
            if 0 <= k < self.n:
                t = self.toks[k]
                if t.kind == "num" or (t.kind == "word" and len(t.raw) == 1) or k in self.number_at:
                    return True
        return False

    def _pole(self, w: str, prev: str) -> None:
        pole = _POLES.get(w)
        if pole is None or (w == "old" and prev in ("year", "years")):
            return
        axis, sign = pole
        if prev in ("less", "least") and axis in _GRADABLE:
            sign = "-" if sign == "+" else "+"  # "less expensive" is "cheaper"
            self.poles.discard(("amount", "-"))
        self.poles.add((axis, sign))

    def _phrases(self) -> None:
        low, n = self.low, self.n
        for k, w in enumerate(low):
            nxt = low[k + 1] if k + 1 < n else ""
            if w in ("%", "percent") and nxt == "of":
                self.ops.add("pctof")  # "15% of 80", not "increase 80 by 15%"
            elif w == "root" and k > 0 and low[k - 1] in ("square", "cube"):
                self.ops.add("sqrt" if low[k - 1] == "square" else "cbrt")
            elif w in ("square", "cube") and nxt == "of":
                self.ops.add("pow")
            elif w == "side" and nxt in ("effect", "effects"):
                self.poles.add(("merit", "-"))
        # "subtract 7 from 25" is 25 - 7: put the operands in arithmetic order.
        if (
            "subtract" in low
            and "from" in low
            and len(self.number_order) == 2
            and low.index("subtract") < low.index("from")
        ):
            self.number_order.reverse()

    def _qtype(self) -> str:
        low, n = self.low, self.n
        for k, w in enumerate(low):
            if w in _QTYPES:
                return w
            if w in ("what", "which"):
                return ""
            if w == "how":
                nxt = low[k + 1] if k + 1 < n else ""
                if nxt == "many" and k + 2 < n and _UNIT_WORDS.get(low[k + 2]) in _TIME_UNITS:
                    return "how long"  # "how many hours" asks "how long"
                return _HOW.get(nxt, "how")
        return ""

    def _align(self) -> align.Features:
        """The words for the alignment guard: names, quantities and units by their
        keys (the other guards compare their values), words by their lower-case form,
        punctuation as clause breaks, each with its line's hash (a line both prompts
        share is a payload, set aside)."""
        text, toks = self.text, self.toks
        hashes = [_line_hash(line) for line in text.split("\n")]
        out: list[align.Token] = []
        line, prev_end = 0, 0
        for i, t in enumerate(toks):
            gap = text[prev_end : t.start]
            prev_end = t.end
            line += gap.count("\n")
            if any(c in _CLAUSE_BREAKS for c in gap):
                out.append(align.Token("," if "," in gap else ".", "punct", line))
            if i in self.ordinal_at:
                out.append(align.Token(f"#{self.ordinal_at[i]}", "ord", line))
            elif i in self.value_at:
                out.append(align.Token(self.value_at[i], "num", line))
            elif i in self.number_at:
                continue  # the rest of a quantity ("5 kg", "ten thousand")
            elif i in self.multi_at:
                if i in self.canon_at:
                    out.append(align.Token(self.canon_at[i], "thing", line))
            elif t.kind == "sym":
                if t.low in _TO_CUES:
                    out.append(align.Token("to", "word", line))
                elif t.low in ("/", "&", "+"):
                    out.append(align.Token("/", "punct", line))
            elif t.kind in ("url", "ext"):
                out.append(align.Token(t.low.lstrip("."), "thing", line))
            elif i in self.unit_at:
                out.append(align.Token(self.unit_at[i], "unit", line))
            elif i in self.name_at:
                out.extend(self._name_parts(t, self.name_at[i], line))
                if t.raw.replace("\u2019", "'").endswith(("'s", "s'")):
                    out.append(align.Token("'s", "word", line))  # "Alice's manager"
            elif t.low in self.identifiers:
                out.append(align.Token(t.low, "thing", line))
            elif t.low == "dr" and i > 0 and toks[i - 1].low == "tl":
                continue  # "tl;dr"
            elif t.low in _HOW and i > 0 and toks[i - 1].low == "how":
                continue  # "how long", "how much": the question-type guard compares them
            elif t.low in _KEYWORDS and i + 1 < len(toks) and toks[i + 1].low in _KEYWORD_NOUNS:
                out.append(align.Token(t.low, "thing", line))  # "for loop", "if statement"
            else:
                out.extend(align.Token(w, "word", line) for w in _align_words(t.low))
        return align.features(_compounds(out), hashes)

    def _name_parts(self, t: _Tok, names: tuple[str, ...], line: int) -> list[align.Token]:
        """A token with a name in it; "PVC-free", "Paris-based": the other parts are
        words, not dropped."""
        parts = [p for p in _PARTS_RE.split(t.raw) if p]
        if len(parts) < 2:
            return [align.Token(n, _name_tag(n, t.raw), line) for n in names]
        out: list[align.Token] = []
        left = list(names)
        for part in parts:
            low = part.lower()
            key = _CASED_ALIASES.get(part) or _ALIASES.get(low) or _norm_word(part)
            match = next((n for n in left if n in (low, key)), None)
            if match is not None:
                left.remove(match)
                out.append(align.Token(match, _name_tag(match, part), line))
            else:
                out.extend(align.Token(w, "word", line) for w in _align_words(low))
        out.extend(align.Token(n, _name_tag(n, t.raw), line) for n in left)
        return out

    def _frame(self) -> tuple[str, ...]:
        # Quantities are the number guard's business: here one placeholder, so that
        # "15% of 80" and "fifteen percent of 80" have the same frame.
        out: list[str] = []
        low = self.low
        for i, t in enumerate(self.toks):
            if (
                t.low == "many"
                and i > 0
                and low[i - 1] == "how"
                and i + 1 < self.n
                and self.unit_at.get(i + 1) in _TIME_UNITS
            ):
                out.append("long")  # "how many hours" asks "how long"
            elif i > 1 and low[i - 1] == "many" and low[i - 2] == "how" and out[-1:] == ["long"]:
                continue
            elif t.kind == "ext":
                out.append(t.low[1:])
            elif i in self.multi_at:
                if i in self.canon_at:  # "United States" is one key, as "US" is
                    out.append(self.canon_at[i])
            elif i in self.number_at or t.low in _ORDINAL_WORDS:
                if not out or out[-1] != "#":
                    out.append("#")
            elif i in self.unit_at:
                out.append(self.unit_at[i])
            elif t.kind == "word" and t.raw in _CASED_ALIASES:
                out.append(_CASED_ALIASES[t.raw])
            elif t.kind == "word" and t.low not in _REQUEST:
                # "zero-sum" and "zero sum", "pour-over" and "pour over" are one frame
                parts = _PARTS_RE.split(t.low)
                out.extend(_ALIASES.get(p) or _content_key(p) for p in parts if p)
            elif t.kind == "sym" and t.low in _OPS:
                out.append(_OPS[t.low])
        return tuple(out)

    def _roles(self) -> set[tuple[str, str]]:
        """Source and target: "from X to Y", "X to Y", "X into Y", "in Y" (a unit or a
        language, no article), "how many X ... in a Y", and the object of "than"."""
        toks, low, n = self.toks, self.low, self.n
        unit_at, number_at, canon_at = self.unit_at, self.number_at, self.canon_at
        roles: set[tuple[str, str]] = set()

        def key(k: int) -> str | None:
            if k < 0 or k >= n:
                return None
            if k in unit_at:
                return unit_at[k]
            if toks[k].kind in ("word", "ext") and low[k] not in _STOP:
                return canon_at.get(k)
            return None

        def after(k: int) -> int:
            k += 1
            while k < n and k not in unit_at and (low[k] in _SKIP or k in number_at):
                k += 1
            return k

        for i, w in enumerate(low):
            if w in _TO_CUES:
                tgt = key(after(i))
                if tgt is not None:
                    roles.add((tgt, "tgt"))
                    src = key(i - 1)
                    if src is not None:
                        roles.add((src, "src"))
            elif w == "from":
                src = key(after(i))
                if src is not None:
                    roles.add((src, "src"))
            elif w == "in" and i + 1 < n:
                k = after(i)
                if low[i + 1] in ("a", "an", "one") and k in unit_at:
                    roles.add((unit_at[k], "src"))  # "how many ounces in a pound"
                elif i + 1 in unit_at or (low[i + 1] in _ALIASES and i + 1 in canon_at):
                    tgt = key(i + 1)  # "100 °F in Celsius", "say hello in French"
                    if tgt is not None:
                        roles.add((tgt, "tgt"))
                        if i - 1 in unit_at:
                            roles.add((unit_at[i - 1], "src"))
            elif w == "many" and i > 0 and low[i - 1] == "how":
                k = after(i)
                if k in unit_at:
                    roles.add((unit_at[k], "tgt"))
            elif w == "than":
                obj = key(after(i))
                if obj is not None:
                    roles.add((obj, "obj"))
        return roles


# A numeral written in a format: phone numbers, dates, times, versions, IDs ("(555)
# 123-4567", "2024-01-31", "31/01/2024", "9:30"). Asked for in another format, the
# answer differs even though the digits agree.
_FORMATTED_RE = re.compile(r"\(?\d+\)?(?:[ ]?[-/.:)][ ]?\(?\d+\)?)+|\(\d+\)[ ]?\d+")


def _shape(s: str) -> str:
    return re.sub(r"\d+", "d", s.replace(" ", ""))


# "for loop" / "while loop": a keyword named by the noun after it is a thing, not a
# function word.
_KEYWORD_NOUNS = _words("loop loops statement statements block blocks clause keyword")
_KEYWORDS = _words("for while do if else switch case try catch finally with select join")

_CLAUSE_BREAKS = frozenset(",.;:!?()[]{}\n")
_APOSTROPHE_TAILS = ("'s", "'m", "'re", "'ve", "'ll", "'d", "s'", "'ing", "'ed")
# "it's", "what's", "let's": a verb or "us" contracted, not a possessive
_CONTRACTED = _words("it that what there here who where how when let he she this")


def _line_hash(line: str) -> int:
    """A line's identity for payload matching; 0 (never shared) for an empty line."""
    words = line.lower().split()
    if not words:
        return 0
    return zlib.crc32(" ".join(words).encode("utf-8", "replace")) or 1


def _compounds(tokens: list[align.Token]) -> list[align.Token]:
    """Two words WordNet knows as one ("sum up", "set up", "time zone") become one
    word, so they can be matched as one ("summarize", "timezone")."""
    out: list[align.Token] = []
    k = 0
    while k < len(tokens):
        t = tokens[k]
        if k + 1 < len(tokens):
            u = tokens[k + 1]
            if (
                t.tag == "word"
                and u.tag == "word"
                and t.line == u.line
                and lexicon.kind(t.key) not in ("stop", "marker", "polar")
                and (u.key in lexicon.PARTICLES or lexicon.kind(u.key) == "content")
                and lexicon.compound(t.key, u.key)
            ):
                out.append(align.Token(f"{t.key}_{u.key}", "word", t.line))
                k += 2
                continue
        out.append(t)
        k += 1
    return out


def _name_tag(name: str, raw: str) -> str:
    """A name's tag for the alignment: "name" for someone who can act (Alice, Brennan
    Logistics), "thing" for a known thing, place or date, or an acronym or term in
    capitals (SQL, INNER JOIN, IT)."""
    if name in _GAZETTEER or name in _CALENDAR or (len(raw) > 1 and raw.isupper()):
        return "thing"
    return "name"


@lru_cache(maxsize=1 << 14)
def _align_words(low: str) -> tuple[str, ...]:
    """A word as the alignment sees it: contractions cut ("it's" -> "it", "don't" is
    the negation guard's), unknown hyphenated compounds split ("case-sensitive" ->
    "case", "sensitive"; "e-mail" stays), alternatives split ("apps/sites")."""
    w = low.replace("\u2019", "'")
    if w.endswith("n't"):
        return ("not",)  # the negation guard counts it; the alignment notes its scope
    if w in lexicon.ABBREV:  # "w/o" before it is split at the slash
        return (w,)
    if w.endswith(("'s", "s'")) and len(w) > 2 and w[:-2] not in _CONTRACTED:
        # "the manager's assistant": the owner's role is marked, as "of" would mark it
        owner = w[:-2] if w.endswith("'s") else w[:-1]
        while owner.endswith(("'s", "'")):  # "x's's's": no recursion on junk
            owner = owner[:-2] if owner.endswith("'s") else owner[:-1]
        return (*_align_words(owner), "'s") if owner else ("'s",)
    for tail in _APOSTROPHE_TAILS:
        if w.endswith(tail) and len(w) > len(tail):
            w = w[: -len(tail)]
            break
    if "/" in w:
        return tuple(p for part in w.split("/") if part for p in _align_words(part))
    if "-" in w and not (lexicon.known(w) or w in lexicon.EQUIV):
        return tuple(p for p in w.split("-") if p)
    return (w,) if w else ()


# --------------------------------------------------------------------------- check


def check(query: Signature, entry: Signature, guards: Collection[str] | None = None) -> str | None:
    """None when the entry's question may answer the query's, else a short reason.

    `guards` selects from :data:`GUARDS` and :data:`CANDIDATE_GUARDS` (the benchmark
    measures each one); the default is :data:`GUARDS`. Symmetric in its arguments.
    """
    try:
        return _check(query, entry, GUARDS if guards is None else guards)
    except Exception:  # a verifier bug must cost a miss, never a request
        return "verifier error"


def accept(
    score: float, query: Signature, entry: Signature, threshold: float = DEFAULT_THRESHOLD
) -> tuple[bool, str | None]:
    """The shipped decision: cosine at or above `threshold`, and the verifier agrees.

    Returns (accepted, reason); the reason is "below threshold" or the verifier's.
    """
    try:
        if not score >= threshold:  # NaN is refused too
            return False, "below threshold"
    except TypeError:
        return False, "below threshold"
    reason = check(query, entry)
    return reason is None, reason


def _check(a: Signature, b: Signature, guards: Collection[str]) -> str | None:
    if a is b:
        return None
    if "numbers" in guards:
        reason = _numbers(a, b)
        if reason:
            return reason
    if "operators" in guards and a.ops != b.ops and a.ops - b.ops and b.ops - a.ops:
        return "operation differs"
    if "quoted" in guards and (a.quoted or b.quoted or a.code or b.code):
        for q in a.quoted:
            if f" {q} " not in b.text:
                return "quoted text differs"
        for q in b.quoted:
            if f" {q} " not in a.text:
                return "quoted text differs"
        for c in a.code:
            if c not in b.raw:
                return "quoted text differs"
        for c in b.code:
            if c not in a.raw:
                return "quoted text differs"
    if "identifiers" in guards and a.identifiers != b.identifiers:
        for x, y in ((a, b), (b, a)):
            if not all(_identifier_in(ident, y) for ident in x.identifiers - y.identifiers):
                return "identifiers differ"
    # A name on one side must appear on the other, in any case or role.
    if (
        "entities" in guards
        and a.entities != b.entities
        and (not a.entities <= b.words or not b.entities <= a.words)
    ):
        return "entities differ"
    if "negation" in guards and a.negated != b.negated:
        return "negation differs"
    if "direction" in guards and a.roles and b.roles and a.roles != b.roles:
        reason = _direction(a, b)
        if reason:
            return reason
    if "antonyms" in guards and a.poles and b.poles and a.poles != b.poles:
        reason = _antonyms(a, b)
        if reason:
            return reason
    # A bare "how" differs only from why / when / where / who ("where do you sell" / "how
    # do you sell"); next to "how much" or "how long" it says nothing.
    if (
        "qtype" in guards
        and a.qtype != b.qtype
        and a.qtype
        and b.qtype
        and ("how" not in (a.qtype, b.qtype) or {a.qtype, b.qtype} & _QTYPES)
    ):
        return "question type differs"
    if "frame" in guards:
        reason = _frame(a, b)
        if reason:
            return reason
    if "align" in guards:
        reason = align.differences(a.align, b.align)
        if reason:
            return reason
    if "content" in guards:
        reason = _content(a, b)
        if reason:
            return reason
    if "length" in guards:
        la, lb = len(a.content) or 1, len(b.content) or 1
        if max(la, lb) > LENGTH_RATIO * min(la, lb):
            return "lengths differ"
    return None


_SOFT_UNITS = frozenset(_UNIT_WORDS.values()) - {"x", "k", "m", "clock"}


_IDENT_SPLIT_RE = re.compile(r"[_.:/\-()]+|(?<=[a-z])(?=[A-Z])")


def _identifier_in(ident: str, other: Signature) -> bool:
    """The identifier, or the same name spelt otherwise, is in the other prompt:
    "k8s" / "Kubernetes", "w-2" / "w2", "node.js" / "Node", "customer_ids" / "customer
    IDs", "json.parse/json.stringify" / "json.parse and json.stringify()"."""
    pool = other.words | other.identifiers
    flat = {_flat(w) for w in pool}
    return all(
        part in pool
        or _ALIASES.get(part, part) in pool
        or _flat(part) in flat
        or (part.endswith(".js") and part[:-3] in pool)
        or _parts_in(part, pool)
        for part in (p for p in ident.split("/") if p)
    )


def _flat(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s)


def _parts_in(ident: str, pool: frozenset[str]) -> bool:
    """Every part of a compound name is a word on the other side ("customer_ids")."""
    parts = [p.lower() for p in _IDENT_SPLIT_RE.split(ident) if len(p) > 1]
    return len(parts) > 1 and all(p in pool or _norm_word(p) in pool for p in parts)


def _numbers(a: Signature, b: Signature) -> str | None:
    if a.numbers != b.numbers:
        for x, y in ((a, b), (b, a)):
            for value, unit in x.numbers - y.numbers:
                # A unit written on one side only ("a 3-day trip" / "a trip of 3"): the
                # units check below and the alignment's roles judge the rest. Not "3x"
                # (a coefficient), "10k", a clock time.
                if unit in _SOFT_UNITS and (value, "") in y.numbers:
                    continue
                if not unit and any(v == value and u in _SOFT_UNITS for v, u in y.numbers):
                    continue
                # A bare number may stand for the other side's ordinal: "World War 2" / "II".
                if unit or not value.isdigit() or int(value) not in y.ordinals:
                    return "numbers differ"
    if (
        (a.noncommutative or b.noncommutative)
        and a.number_order != b.number_order
        and sorted(a.number_order) == sorted(b.number_order)
    ):
        return "operand order differs"
    if a.ordinals and b.ordinals and a.ordinals != b.ordinals:
        return "ordinals differ"
    if a.formats and b.formats and a.formats != b.formats:
        return "number formats differ"
    if a.units != b.units:
        ta, tb = a.units & _TIME_UNITS, b.units & _TIME_UNITS
        if ta and tb and ta != tb:
            return "units differ"
        ua, ub = a.units - ta, b.units - tb
        if ua and ub and ua != ub:
            return "units differ"
    return None


def _direction(a: Signature, b: Signature) -> str | None:
    ra: dict[str, set[str]] = {}
    for tok, role in a.roles:
        ra.setdefault(tok, set()).add(role)
    for tok, role in b.roles:
        roles_a = ra.get(tok)
        if roles_a is not None and role not in roles_a:
            roles_b = {r for t, r in b.roles if t == tok}
            if not roles_a & roles_b:
                return "direction differs"
    # "is X faster than Y" / "is Y faster than X", ".txt to .md" / ".md to .txt": each
    # side's target is a name the other side uses somewhere else.
    salient_a = a.entities | a.identifiers | a.units
    salient_b = b.entities | b.identifiers | b.units
    for role in ("tgt", "obj"):
        ta = {t for t, r in a.roles if r == role}
        tb = {t for t, r in b.roles if r == role}
        if ta and tb and not ta & tb and ta <= salient_b and tb <= salient_a:
            return "direction differs"
    return None


def _antonyms(a: Signature, b: Signature) -> str | None:
    axes_a: dict[str, set[str]] = {}
    for axis, pole in a.poles:
        axes_a.setdefault(axis, set()).add(pole)
    axes_b: dict[str, set[str]] = {}
    for axis, pole in b.poles:
        axes_b.setdefault(axis, set()).add(pole)
    for axis, pa in axes_a.items():
        pb = axes_b.get(axis)
        if pb is not None and pa != pb:
            return "opposite meaning"
    return None


def _matched(w: str, others: frozenset[str]) -> bool:
    """A word has a close counterpart: same key, or one contains the other ("tie" /
    "necktie", "screen" / "screenshot"), or they share a 5-letter beginning."""
    if w in others:
        return True
    for o in others:
        if len(w) >= 3 and len(o) >= 3 and (w in o or o in w):
            return True
        if len(w) >= 5 and w[:5] == o[:5]:
            return True
    return False


def _frame(a: Signature, b: Signature) -> str | None:
    """The same sentence with one slot changed ("reverse a list" / "reverse a string",
    "tie a tie" / "tie a bow tie"): when everything else is shared, the slot is the
    point of the question."""
    fa, fb = a.frame, b.frame
    n = min(len(fa), len(fb))
    p = 0
    while p < n and fa[p] == fb[p]:
        p += 1
    s = 0
    while s < n - p and fa[-1 - s] == fb[-1 - s]:
        s += 1
    mid_a = fa[p : len(fa) - s]
    mid_b = fb[p : len(fb) - s]
    if len(mid_a) > FRAME_MAX or len(mid_b) > FRAME_MAX or not (mid_a or mid_b):
        return None
    only_a = [w for w in mid_a if w not in _STOP and w != "#" and w not in mid_b]
    only_b = [w for w in mid_b if w not in _STOP and w != "#" and w not in mid_a]
    only_a = [w for w in only_a if not _matched(w, b.content)]
    only_b = [w for w in only_b if not _matched(w, a.content)]
    if only_a and only_b:
        return "a key word differs"
    if only_a or only_b:
        return "a key word was added"
    return None


def _content(a: Signature, b: Signature) -> str | None:
    """Candidate: content words of each side with no counterpart on the other."""
    only_a = [w for w in a.content - b.content if not _matched(w, b.content)]
    only_b = [w for w in b.content - a.content if not _matched(w, a.content)]
    if not (only_a and only_b) or len(a.content & b.content) < 2:
        return None
    if len(only_a) <= CONTENT_MAX and len(only_b) <= CONTENT_MAX:
        return "content words differ"
    return None
