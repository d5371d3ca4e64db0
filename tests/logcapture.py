"""A logging handler that keeps the messages it sees (for loggers that do not propagate to pytest's caplog)."""

import logging


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())
