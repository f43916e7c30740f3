"""The OpenAI Realtime side: dialects, session configuration, the backend endpoint."""
