"""Naive baseline bridge, written the way published single-file samples do it: FastAPI,
`websockets` to the Realtime service, json.loads/json.dumps of every message, base64
decode and re-encode of every frame, one mark name for every chunk, and a `clear` on
speech_started with no accounting of what was heard.

Run: naive_bridge.py PORT REALTIME_URL   (used by bench/load.py as the baseline)
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

import uvicorn
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
PCMU = {"type": "audio/pcmu"}
REALTIME_URL = sys.argv[2] if len(sys.argv) > 2 else "ws://127.0.0.1:9000/v1/realtime"


@app.websocket("/media-stream")
async def media_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    async with websockets.connect(REALTIME_URL, max_size=2**24) as openai_ws:
        session = {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"format": PCMU, "turn_detection": {"type": "server_vad"}},
                    "output": {"format": PCMU, "voice": "marin"},
                },
                "instructions": "You are a helpful voice assistant.",
            },
        }  # fmt: skip
        await openai_ws.send(json.dumps(session))
        stream_sid = None

        async def receive_from_twilio() -> None:
            nonlocal stream_sid
            try:
                async for message in websocket.iter_text():
                    data = json.loads(message)
                    if data["event"] == "media":
                        audio = base64.b64decode(data["media"]["payload"])
                        append = {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(audio).decode("utf-8"),
                        }
                        await openai_ws.send(json.dumps(append))
                    elif data["event"] == "start":
                        stream_sid = data["start"]["streamSid"]
                    elif data["event"] == "stop":
                        break
            except WebSocketDisconnect:
                pass
            await openai_ws.close()

        async def send_to_twilio() -> None:
            try:
                async for message in openai_ws:
                    response = json.loads(message)
                    if response.get("type") == "response.output_audio.delta":
                        audio = base64.b64decode(response["delta"])
                        media = {
                            "event": "media",
                            "streamSid": stream_sid,
                            "media": {"payload": base64.b64encode(audio).decode("utf-8")},
                        }
                        await websocket.send_json(media)
                        mark = {
                            "event": "mark",
                            "streamSid": stream_sid,
                            "mark": {"name": "responsePart"},
                        }
                        await websocket.send_json(mark)
                    elif response.get("type") == "input_audio_buffer.speech_started":
                        await websocket.send_json({"event": "clear", "streamSid": stream_sid})
                        await openai_ws.send(json.dumps({"type": "response.cancel"}))
            except Exception:  # the sample's catch-all
                pass

        await asyncio.gather(receive_from_twilio(), send_to_twilio())


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
