import helixhooks as hh


class Webhook:
    """Queues reports; a real deployment would POST them to the configured URL."""

    @hh.hookimpl
    def helix_init(self, config):
        self.url = config["url"]
        self.outbox = []

    @hh.hookimpl
    def helix_health_check(self):
        return len(self.outbox) < 1000 or f"{len(self.outbox)} reports not yet sent"

    @hh.hookimpl
    def report_ready(self, report):
        self.outbox.append({"url": self.url, "body": report})
