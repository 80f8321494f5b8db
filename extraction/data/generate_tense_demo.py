"""Build ``tense_demo.csv``, a harder labelled set for the probe, from the templates below.

Run ``python extraction/data/generate_tense_demo.py`` to rewrite the CSV next to this
file; the output is deterministic (fixed seed), and a test checks that the shipped CSV is
exactly what this script produces.

Every text was written for this project from the templates below and ends in
``" Tense:"``; its label is ``" past"`` or ``" future"`` (with the leading space: each is
one token of the SmolLM2 tokenizer). A text describes one event, told in one sentence
whose main clause is in the simple past (``"Tom sold the old car."``, ``"Tom did not sell
the old car."``) or in the future (``"Tom will sell the old car."``, ``"Tom is going to
sell the old car."``, ``"He won't sell the old car."``); the tense of that main clause is
the label. Everything else is there to make the task harder than one word:

- a time adverb in front of or after the event: one of the event's own time (``"last
  week"``, ``"next week"``), one that fits both (``"on Monday"``, ``"in June"``), or none;
- in about half of the events, a subordinate clause with a time of its own, past or future
  at random whatever the label, so that half of them point the other way (``"..., as they
  agreed yesterday"`` after a future event, ``"..., hoping it will pay off soon"`` after a
  past one);
- zero to four context sentences in the present tense around the event (before and
  after it), half of which embed a past or a future clause of their own (``"Nobody
  remembers who built the old bridge."``, ``"The forecast says it will be cold."``).

The two classes are balanced (200 texts each), and the texts range from a bare event
(7 tokens) to four context sentences and a long event (72 tokens), so that
in a padded batch most texts are shorter than the longest one and padding matters.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

SEED = 20240616
PER_CLASS = 200  # 400 texts in all
SUFFIX = " Tense:"
LABELS = {"past": " past", "future": " future"}
CSV_PATH = Path(__file__).with_name("tense_demo.csv")

# (name, pronoun): the event's subject, by name or, after a context sentence, by pronoun.
PEOPLE = [
    ("Maria", "she"),
    ("Tom", "he"),
    ("Aisha", "she"),
    ("Lukas", "he"),
    ("Mei", "she"),
    ("Daniel", "he"),
    ("Priya", "she"),
    ("Omar", "he"),
    ("Elena", "she"),
    ("Jonas", "he"),
    ("my aunt", "she"),
    ("our neighbour", "he"),
]

# (simple past, bare infinitive) of the event's verb phrase.
EVENTS = [
    ("left", "leave"),
    ("called", "call"),
    ("won", "win"),
    ("resigned", "resign"),
    ("moved to Lisbon", "move to Lisbon"),
    ("sold the old car", "sell the old car"),
    ("ran the city marathon", "run the city marathon"),
    ("wrote a letter to the mayor", "write a letter to the mayor"),
    ("met the new neighbours", "meet the new neighbours"),
    ("painted the kitchen", "paint the kitchen"),
    ("fixed the roof", "fix the roof"),
    ("gave a talk at the library", "give a talk at the library"),
    ("took the early train to the coast", "take the early train to the coast"),
    ("bought a piano", "buy a piano"),
    ("started a new job at the hospital", "start a new job at the hospital"),
    ("opened a small bakery", "open a small bakery"),
    ("lost the final", "lose the final"),
    ("flew to Tokyo", "fly to Tokyo"),
    ("built a treehouse for the kids", "build a treehouse for the kids"),
    ("sang at the wedding", "sing at the wedding"),
    ("taught the evening class", "teach the evening class"),
    ("cleaned the garage", "clean the garage"),
    ("finished the novel", "finish the novel"),
    ("adopted a dog from the shelter", "adopt a dog from the shelter"),
    ("signed the contract", "sign the contract"),
    ("hosted the family dinner", "host the family dinner"),
    ("planted three apple trees", "plant three apple trees"),
    ("crossed the mountains on foot", "cross the mountains on foot"),
]

# Main-clause forms: "{S}" subject, "{V}" the past verb phrase, "{B}" the bare one.
FORMS = {
    "past": ["{S} {V}.", "{S} {V}.", "{S} {V}.", "{S} did not {B}.", "{S} never {V}."],
    "future": ["{S} will {B}.", "{S} will {B}.", "{S} is going to {B}.", "{S} will not {B}.", "{S} will never {B}."],
}
FUTURE_CONTRACTED = ["{S}'ll {B}.", "{S} won't {B}."]  # pronoun subjects only

# Time adverbs: of the event's own time, or ones that fit both tenses.
ADVERBS = {
    "past": ["yesterday", "last week", "last summer", "two days ago", "in 2019", "earlier this year", "a month ago"],
    "future": ["tomorrow", "next week", "next summer", "in two days", "in 2031", "later this year", "in a month"],
}
NEUTRAL_ADVERBS = ["on Monday", "in June", "this morning", "at the weekend", "after lunch", "on Friday evening"]

# Subordinate clauses with a time of their own, appended to events of either tense (so that
# they carry no information about the label): ones about the future, ones about the past.
SUBORDINATE = {
    "future": [
        "although the results will only come next month",
        "because everyone says prices will rise next year",
        "hoping it will pay off soon",
        "even though the move will take months",
        "so that the family will have more room next year",
        "since the new rules will start in the spring",
        "knowing the weather will turn cold tomorrow",
    ],
    "past": [
        "as they agreed yesterday",
        "just as the family decided last month",
        "although nobody believed it a year ago",
        "because the last attempt failed in May",
        "now that the storm passed",
        "after the long talk they had last night",
        "since the old plan fell apart in April",
    ],
}

# Present-tense context sentences ("{N}" name, "{P}" pronoun, "{Pp}" the subject: its name
# until it has been named, then its pronoun):
# plain ones, and ones that embed a past or a future clause as a distractor.
CONTEXT = {
    "plain": [
        "{N} lives in a small town near the coast.",
        "The town has one bakery and two schools.",
        "{Pp} works long hours most weeks.",
        "The weather is mild most of the year.",
        "{N} likes quiet mornings and strong coffee.",
        "The street is usually busy on weekdays.",
        "{Pp} has two brothers and a sister.",
        "Their house stands at the end of a narrow lane.",
        "{N} rarely talks about work at home.",
        "The nearest city is an hour away by bus.",
    ],
    "past": [
        "Nobody remembers who built the old bridge.",
        "{N} still talks about the trip {P} took as a child.",
        "Everyone knows how hard the last winter was.",
        "The house looks the same as it did ten years ago.",
        "{Pp} often thinks about the job {P} lost in 2015.",
        "The neighbours still wonder why the shop closed.",
    ],
    "future": [
        "Everyone hopes the weather will hold.",
        "The forecast says it will be cold.",
        "{N} thinks the rent will go up again.",
        "Friends say the new road will change everything.",
        "{Pp} expects the busy season will start soon.",
        "The council says the station will reopen next year.",
    ],
}

# (share of texts, context sentences): the event alone, with one, two or four sentences around it.
SHAPES = [("bare", 0), ("short", 1), ("medium", 2), ("long", 4)]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _event(rng: random.Random, tense: str, subject: str, pronoun_subject: bool, long: bool) -> str:
    """One event sentence in ``tense``; ``long`` events more often carry an adverb and a distractor."""
    past, bare = rng.choice(EVENTS)
    forms = list(FORMS[tense])
    if tense == "future" and pronoun_subject:
        forms += FUTURE_CONTRACTED
    clause = rng.choice(forms)[:-1].replace("{S}", subject).replace("{V}", past).replace("{B}", bare)
    kind = rng.choice(["own", "neutral", "neutral"] if long else ["own", "own", "neutral", "none"])
    adverb = {"own": rng.choice(ADVERBS[tense]), "neutral": rng.choice(NEUTRAL_ADVERBS), "none": ""}[kind]
    if adverb and rng.random() < 0.5:
        clause = f"{_cap(adverb)}, {clause}"
    elif adverb:
        clause = f"{clause} {adverb}"
    if rng.random() < (0.75 if long else 0.3):
        clause = f"{clause}, {rng.choice(SUBORDINATE[rng.choice(['past', 'future'])])}"
    return _cap(clause) + "."


def _context(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct present-tense context templates, about half with an embedded distractor."""
    pool = CONTEXT["plain"] + CONTEXT["past"] + CONTEXT["future"]
    weights = [1.0] * len(CONTEXT["plain"]) + [10 / 12] * (len(CONTEXT["past"]) + len(CONTEXT["future"]))
    chosen: list[str] = []
    while len(chosen) < count:
        sentence = rng.choices(pool, weights)[0]
        if sentence not in chosen:
            chosen.append(sentence)
    return chosen


def _text(rng: random.Random, tense: str, shape: tuple[str, int]) -> str:
    """One text whose event is in ``tense``, with the context-sentence count of ``shape``.

    The subject is named the first time it appears and may be a pronoun after that."""
    _, count = shape
    name, pronoun = rng.choice(PEOPLE)
    templates = _context(rng, count)
    position = rng.randrange(count + 1)  # how many context sentences precede the event
    sentences: list[str] = []
    named = False
    for index in range(count + 1):
        if index == position:
            by_pronoun = named and rng.random() < 0.7
            sentences.append(_event(rng, tense, pronoun if by_pronoun else name, by_pronoun, long=count >= 2))
            named = True
        if index < count:
            template = templates[index]
            subject = "{P}" if named else "{N}"
            sentence = template.replace("{Pp}", subject).replace("{N}", name).replace("{P}", pronoun)
            named = named or "{N}" in template or "{Pp}" in template
            sentences.append(_cap(sentence))
    return " ".join(sentences) + SUFFIX


def generate(seed: int = SEED, per_class: int = PER_CLASS) -> list[tuple[str, str]]:
    """``per_class`` distinct (text, label) pairs per class, in a shuffled, deterministic order."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for tense, label in LABELS.items():
        count = 0
        while count < per_class:
            text = _text(rng, tense, SHAPES[count % len(SHAPES)])
            if text in seen:
                continue
            seen.add(text)
            rows.append((text, label))
            count += 1
    rng.shuffle(rows)
    return rows


def to_csv(rows: list[tuple[str, str]]) -> str:
    """CSV text with a ``text,label`` header; every field quoted so labels keep their leading space."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue()


if __name__ == "__main__":
    CSV_PATH.write_text(to_csv(generate()), encoding="utf-8")
    print(f"wrote {CSV_PATH}")
