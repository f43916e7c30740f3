"""Cost of the call core per 20 ms audio frame, each way (mu-law passthrough).

Measures only the sans-I/O core (parse, decide, build the outgoing text): what the bridge
adds per frame before the sockets. Run: .venv/bin/python bench/core_hot_path.py
"""

from __future__ import annotations

import base64
import json
import time

from bridge.call import Call

FRAMES = 200_000
STREAM = "MZ" + "0" * 32


def setup() -> Call:
    call = Call()
    start = {
        "event": "start",
        "streamSid": STREAM,
        "start": {"streamSid": STREAM, "callSid": "CA" + "0" * 32, "accountSid": "AC"},
    }
    call.receive_twilio(json.dumps(start), 0.0)
    call.realtime_connected(0.0)
    call.receive_realtime(json.dumps({"type": "session.updated", "session": {}}), 0.0)
    call.receive_realtime(json.dumps({"type": "response.created", "response": {"id": "r"}}), 0.0)
    return call


def per_frame_us(run, actions_per_frame: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        actions = run()
        best = min(best, time.perf_counter() - began)
        # Every frame must have gone through, or the figure is that of a dropping call.
        assert actions == FRAMES * actions_per_frame, (actions, FRAMES * actions_per_frame)
    return best / FRAMES * 1e6


def main() -> None:
    payload = base64.b64encode(bytes(160)).decode()
    caller_frame = json.dumps(
        {
            "event": "media",
            "sequenceNumber": "4",
            "streamSid": STREAM,
            "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": payload},
        }
    )
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "r",
            "item_id": "item_0",
            "output_index": 0,
            "content_index": 0,
            "delta": payload,
        }
    )

    def caller_to_realtime() -> int:
        call = setup()
        forwarded = 0
        for n in range(FRAMES):  # 20 ms apart, as on a real line (the flood limits apply)
            forwarded += len(call.receive_twilio(caller_frame, n * 0.020))
        return forwarded

    def realtime_to_caller() -> int:
        # Each delta is followed by its mark's echo, as in a call where playback keeps up.
        call = setup()
        forwarded = 0
        for n in range(1, FRAMES + 1):
            forwarded += len(call.receive_realtime(delta, n * 0.020))
            call.receive_twilio(
                '{"event":"mark","streamSid":"'
                + STREAM
                + f'","mark":{{"name":"item_0:{n * 160}"}}}}',
                n * 0.020,
            )
        return forwarded

    up = per_frame_us(caller_to_realtime, 1)
    down = per_frame_us(realtime_to_caller, 2)
    print(f"call core, per 20 ms frame ({FRAMES} frames, best of 3):")
    print(f"  caller -> Realtime (media -> input_audio_buffer.append):   {up:6.2f} us")
    print(f"  Realtime -> caller (delta -> media + mark, echo handled):  {down:6.2f} us")
    print(
        f"  both ways, per call-second (50 frames each way):           {(up + down) * 50:6.1f} us"
    )


if __name__ == "__main__":
    main()
