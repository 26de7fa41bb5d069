from .words import POSITIVE


def score(tokens):
    if not tokens:
        return 0.0
    return sum(token in POSITIVE for token in tokens) / len(tokens)
