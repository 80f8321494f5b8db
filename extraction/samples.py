"""Sample texts of clearly different lengths, for the app's text box and the examples."""

SAMPLE_TEXTS: list[str] = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "I loved this movie.",
    "The mitochondria is the powerhouse of the",
    "After three hours of waiting in the rain for a bus that never came, she finally decided to walk home, "
    "and on the way she found",
    "2 + 2 =",
    "In machine learning, a linear probe is a simple classifier trained on the hidden states of a network to test "
    "whether some property is linearly decodable from them. Researchers use probes to ask what a model knows, but "
    "the answer is only as good as the hidden states the probe was trained on, which is why",
    "Hello",
    "The quick brown fox jumps over the lazy",
]
