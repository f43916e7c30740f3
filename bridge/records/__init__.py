"""Call records: what happened on every call, kept after the call ends (`model`), where
they are kept (`store`), and how a finished call becomes one (`from_call`)."""
