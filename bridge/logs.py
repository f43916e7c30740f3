"""Log setup: one line per event, each naming its call."""

from __future__ import annotations

import logging


class _CallIdDefault(logging.Filter):
    """Lines outside a call still fill the call column, so every line has one shape."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_sid"):
            record.call_sid = "-"
        return True


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_CallIdDefault())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(call_sid)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At DEBUG the websockets library logs every handshake header: the Realtime API key,
    # a gateway ?token=, Twilio's signatures. Those lines never leave it.
    logging.getLogger("websockets").setLevel(max(logging.INFO, root.level))
