"""The call core, sans-I/O: typed events in, typed actions out, time passed in.

`Call` is one call's logic; `StreamOpening` is a Media Streams socket before its call.
Events are in `bridge.core.events`, actions in `bridge.core.actions`.
"""
