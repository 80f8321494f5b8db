"""Build ``sentiment_demo.csv``, the probe's built-in labelled set, from the templates below.

Run ``python extraction/data/generate_sentiment_demo.py`` to rewrite the CSV next to this
file; the output is deterministic (fixed seed), and a test checks that the shipped CSV is
exactly what this script produces.

Every text is a short product, movie or restaurant review written for this project,
ending in ``" Sentiment:"``; its label is ``" positive"`` or ``" negative"`` (with the
leading space, so that each label is the single token a model would predict next).
The two classes are balanced, and the reviews range from one short sentence to six
sentences (roughly 8 to 70 tokens), so that in a padded batch most texts are shorter
than the longest one and padding matters. Long reviews mix in neutral context and one
minor point of the opposite polarity, so the label is not just the last word.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

SEED = 20240607
PER_CLASS = 100  # 200 texts in all
SUFFIX = " Sentiment:"
LABELS = {"positive": " positive", "negative": " negative"}
CSV_PATH = Path(__file__).with_name("sentiment_demo.csv")

# Per domain: subjects, then sentences by polarity; "{x}" is replaced by a subject.
DOMAINS: dict[str, dict[str, list[str]]] = {
    "product": {
        "subjects": [
            "this blender",
            "the hiking backpack",
            "this desk lamp",
            "the mechanical keyboard",
            "this phone case",
            "the electric kettle",
            "the robot vacuum",
            "this winter jacket",
            "the coffee grinder",
            "this office chair",
            "the bike light",
            "this rice cooker",
        ],
        "positive": [
            "I love {x}.",
            "{X} works perfectly.",
            "Best purchase I have made this year.",
            "It arrived early and was exactly as described.",
            "The build quality is excellent and it feels like it will last for years.",
            "Setup took two minutes and it has worked flawlessly ever since.",
            "Worth every penny.",
            "My whole family uses it every day and nobody has a single complaint.",
            "It is quiet, fast and easy to clean.",
            "Customer support answered within an hour and solved my problem right away.",
            "I already ordered a second one as a gift.",
            "Honestly, {x} exceeded every expectation I had.",
        ],
        "negative": [
            "{X} broke after a week.",
            "Total waste of money.",
            "It stopped working the second time I used it.",
            "The instructions were useless and half the parts were missing.",
            "It feels cheap and flimsy, and the finish is already peeling.",
            "Support never answered my emails, so I am sending it back.",
            "Do not buy this.",
            "It is noisy, slow and much smaller than the photos suggest.",
            "I regret buying {x}.",
            "After three days it smelled of burning plastic.",
            "The replacement they sent was just as faulty as the first one.",
            "Honestly, {x} is the worst thing I have ordered online.",
        ],
        "minor_positive": ["The only good thing was the fast delivery.", "At least the colour is nice."],
        "minor_negative": ["The only downside is the price.", "The box it came in was a bit dented."],
        "neutral": [
            "I bought it for my sister's birthday.",
            "I ordered it on a Tuesday and it came on Friday.",
            "We live in a small flat, so size matters to us.",
            "I use it mostly in the mornings before work.",
            "It comes in three colours and I picked the grey one.",
            "My old one lasted about five years.",
            "I compared it with two other brands before ordering.",
        ],
    },
    "movie": {
        "subjects": [
            "The Last Lighthouse",
            "Midnight Harbor",
            "Paper Kingdoms",
            "Orbit of Ash",
            "The Quiet Engine",
            "Salt and Silver",
            "this film",
            "the new sequel",
        ],
        "positive": [
            "{X} is a masterpiece.",
            "The acting was superb and the story kept me gripped until the very last scene.",
            "I laughed, I cried, and I want to watch it again.",
            "A beautiful, moving film.",
            "The soundtrack is gorgeous.",
            "Easily the best film I have seen this year.",
            "Every performance feels honest and the ending is perfect.",
            "The director handles the quiet moments with real care.",
            "I loved {x} from start to finish.",
            "Smart, funny and surprisingly tender.",
        ],
        "negative": [
            "{X} was a boring mess.",
            "The plot made no sense and the dialogue was painful.",
            "I walked out halfway through.",
            "Two hours of my life I will never get back.",
            "The acting was wooden and the jokes fell flat.",
            "A dull, lifeless film.",
            "The ending ruined whatever goodwill the first act had built.",
            "Even the special effects looked cheap.",
            "I hated {x} from start to finish.",
            "Loud, long and completely forgettable.",
        ],
        "minor_positive": ["The costumes were the one bright spot.", "The opening shot was nice, I admit."],
        "minor_negative": ["The middle drags a little.", "One subplot goes nowhere."],
        "neutral": [
            "I saw it on a rainy Sunday afternoon.",
            "It runs a little over two hours.",
            "I went with two friends from work.",
            "It is based on a novel I have not read.",
            "We watched the late showing.",
            "The cinema was about half full.",
            "I knew nothing about it before going in.",
        ],
    },
    "restaurant": {
        "subjects": [
            "Luigi's",
            "the Blue Fern",
            "Casa Marina",
            "the noodle bar on Elm Street",
            "Golden Wok",
            "the corner bistro",
            "this place",
            "the new taco stand",
        ],
        "positive": [
            "The food at {x} was delicious.",
            "Our waiter was friendly and attentive all evening.",
            "The pasta was perfectly cooked and the sauce was wonderful.",
            "Great food, fair prices, lovely staff.",
            "We will definitely be back.",
            "The dessert alone is worth the trip.",
            "Everything tasted fresh and full of flavour.",
            "Highly recommended.",
            "{X} has become our favourite spot in town.",
            "Cosy room, generous portions and a warm welcome.",
        ],
        "negative": [
            "The food at {x} was cold and bland.",
            "We waited an hour and the order was still wrong.",
            "The staff were rude and the tables were dirty.",
            "Overpriced and tasteless.",
            "I felt sick for the rest of the night.",
            "Never again.",
            "The soup was so salty it was inedible.",
            "The manager shrugged when we complained.",
            "{X} has gone badly downhill.",
            "Sticky floors, tiny portions and a long wait.",
        ],
        "minor_positive": ["The bread was fine, to be fair.", "The view from the window is pleasant."],
        "minor_negative": ["It gets a bit loud on weekends.", "Parking nearby is hard to find."],
        "neutral": [
            "We booked a table for four on Saturday.",
            "It is a short walk from the station.",
            "They have a small terrace at the back.",
            "I ordered the fish and my partner had the risotto.",
            "The menu changes every season.",
            "We went there for a birthday dinner.",
            "It opened about a year ago.",
        ],
    },
}

# (share of texts, neutral sentences, polar sentences, with a minor opposite point)
LENGTHS = [
    ("short", 0, 1, False),
    ("medium", 1, 2, False),
    ("long", 1, 3, True),
    ("very long", 2, 3, True),
]


def _fill(sentence: str, subject: str) -> str:
    return sentence.replace("{x}", subject).replace("{X}", subject[0].upper() + subject[1:])


def _review(rng: random.Random, domain: dict[str, list[str]], polarity: str, shape: tuple) -> str:
    """One review of ``polarity`` with the sentence counts of ``shape``."""
    _, neutral_count, polar_count, with_minor = shape
    subject = rng.choice(domain["subjects"])
    polar = rng.sample(domain[polarity], polar_count)
    neutral = rng.sample(domain["neutral"], neutral_count)
    opposite = "negative" if polarity == "positive" else "positive"
    body = neutral[:1] + polar[:-1]
    if with_minor:
        body.insert(rng.randrange(1, len(body) + 1), rng.choice(domain[f"minor_{opposite}"]))
    body += neutral[1:] + polar[-1:] if rng.random() < 0.5 else polar[-1:] + neutral[1:]
    return " ".join(_fill(sentence, subject) for sentence in body) + SUFFIX


def generate(seed: int = SEED, per_class: int = PER_CLASS) -> list[tuple[str, str]]:
    """``per_class`` distinct (text, label) pairs per class, in a shuffled, deterministic order."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    domains = list(DOMAINS.values())
    for polarity, label in LABELS.items():
        count = 0
        while count < per_class:
            domain = domains[count % len(domains)]
            shape = LENGTHS[(count // len(domains)) % len(LENGTHS)]
            text = _review(rng, domain, polarity, shape)
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
