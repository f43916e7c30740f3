"""The webhook side: TwiML answers and Twilio request signatures."""
