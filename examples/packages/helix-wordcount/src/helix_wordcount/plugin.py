import helixhooks as hh


class WordCount:
    @hh.hookimpl
    def helix_init(self, ctx):
        self.hook = ctx.hook

    @hh.hookimpl
    def count_words(self, text):
        return len(self.hook.tokenize(text=text)[0])
