"""Stateless codecs, the only places that know the wire formats: Twilio Media Streams
(`bridge.wire.twilio`) and the Realtime protocol, one codec per dialect
(`bridge.wire.realtime`)."""
