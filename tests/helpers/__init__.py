"""What the tests share: drivers for the call core, the app on a loopback port, Twilio's
side played by hand, a stand-in for Twilio's REST API."""
