"""A real S3-protocol server on loopback for the object storage tests: moto's, serving HTTP
in a thread of the test process, spoken to by the bridge's own boto3 client through
RECORDINGS_S3_ENDPOINT, exactly as it speaks to AWS, MinIO or R2. Nothing is patched: a
stopped server is a refused connection, a missing object S3's own 404."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.object_storage import Bucket, BucketPlace

REGION = "us-east-1"
ACCESS_KEY_ID = "AKIATESTRECORDINGS01"
# What the tests check never reaches a log, a record or an answer.
SECRET_ACCESS_KEY = "s3-test-secret-never-logged-0123456789abcd"


@dataclass
class S3Server:
    endpoint: str
    server: Any  # moto's ThreadedMotoServer

    def stop(self) -> None:
        self.server.stop()


def start_s3_server() -> S3Server:
    threaded = pytest.importorskip(
        "moto.moto_server.threaded_moto_server",
        reason="moto[server] is not installed (it is in the test extra: pip install -e '.[test]')",
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # (a line per request otherwise)
    server = threaded.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3Server(f"http://{host}:{port}", server)


def use_test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The AWS credential chain as a deployment would set it, from the environment, and
    nothing of the machine's own (its profiles, an instance role)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class RecordingsBucket:
    """A fresh bucket on the server, and the settings that record calls into it."""

    server: S3Server
    name: str
    prefix: str = "calls/"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    @property
    def settings(self) -> dict[str, object]:
        return {
            "recordings_url": self.url,
            "recordings_s3_endpoint": self.server.endpoint,
            "recordings_s3_region": REGION,
            "recordings_s3_path_style": True,
        }

    def bucket(self) -> Bucket:
        """The bridge's own client of it."""
        return Bucket(
            BucketPlace(self.name, self.prefix),
            endpoint=self.server.endpoint,
            region=REGION,
            path_style=True,
        )

    def read(self, name: str) -> bytes:
        answer = self.bucket().client.get_object(Bucket=self.name, Key=self.prefix + name)
        return answer["Body"].read()

    def names(self) -> list[str]:
        listed = self.bucket().client.list_objects_v2(Bucket=self.name, Prefix=self.prefix)
        return sorted(o["Key"][len(self.prefix) :] for o in listed.get("Contents", []))

    def etag(self, name: str) -> str:
        head = self.bucket().client.head_object(Bucket=self.name, Key=self.prefix + name)
        return head["ETag"].strip('"')


def new_bucket(server: S3Server) -> RecordingsBucket:
    made = RecordingsBucket(server, f"recordings-{uuid.uuid4().hex[:12]}")
    made.bucket().client.create_bucket(Bucket=made.name)
    return made
