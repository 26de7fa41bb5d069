POSITIVE = frozenset({"good", "great", "fast", "clear", "happy", "love", "nice", "well"})
