import helixhooks as hh


class Reporter:
    @hh.hookimpl
    def helix_init(self, ctx):
        self.hook = ctx.hook

    @hh.hookimpl
    def report(self, text):
        (result,) = self.hook.analyze(text=text)
        mood = "positive" if result["positive"] else "neutral"
        line = f"{result['tokens']} words, score {result['score']:.2f}: {mood}"
        self.hook.report_ready(report=line)
        return line
