import helixhooks as hh

from .scoring import score


class Analyzer:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.threshold = config["threshold"]
        self.hook = ctx.hook

    @hh.hookimpl
    def helix_health_check(self):
        return self.hook is not None

    @hh.hookimpl
    def analyze(self, text):
        tokens = self.hook.tokenize(text=text)[0]
        value = score(tokens)
        return {"score": value, "positive": value >= self.threshold, "tokens": len(tokens)}
