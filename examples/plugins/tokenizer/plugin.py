import re

import helixhooks as hh

_WORD = re.compile(r"[\w']+")


class Tokenizer:
    @hh.hookimpl
    def helix_init(self, config):
        self.lowercase = config["lowercase"]

    @hh.hookimpl
    def helix_start(self, ctx):
        ctx.logger.info("tokenizer ready (lowercase=%s)", self.lowercase)

    @hh.hookimpl
    def tokenize(self, text):
        words = _WORD.findall(text)
        return [w.lower() for w in words] if self.lowercase else words
