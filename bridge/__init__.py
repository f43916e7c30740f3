"""phone-bridge: phone an AI. Twilio Media Streams <-> OpenAI Realtime, with exact barge-in."""

__version__ = "0.1.0"
