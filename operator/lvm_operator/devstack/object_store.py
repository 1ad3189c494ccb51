"""An S3-compatible store on loopback: SeaweedFS (Apache-2.0), built from the Go module proxy.

``weed server`` runs a master, a volume server, a filer and the S3 gateway in one process, every
port a free loopback port, telemetry off, its data in a throw-away directory. One identity (a
random access key and secret per start) may read and write; buckets are created on first upload.
:meth:`SeaweedS3.client_env` is what a client needs: the standard ``AWS_*`` variables, so the
serving side's obstore (and any AWS SDK) reaches it like any S3-compatible endpoint.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .procs import ManagedProcess, free_ports
from .tools import cache_dir, pinned_versions

REGION = "us-east-1"


def weed_binary() -> Path:
    version = pinned_versions()["SEAWEEDFS_VERSION"]
    return cache_dir() / "bin" / f"seaweedfs-{version}" / "weed"


def _s3_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=2):
            return True
    except urllib.error.HTTPError:  # 403 to an anonymous ListBuckets: the gateway answers
        return True


@dataclass
class SeaweedS3:
    run_dir: Path
    binary: Path = field(default_factory=weed_binary)
    access_key: str = field(default_factory=lambda: "lvm" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    s3_port: int = 0
    process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def node_env(self, run_dir: Path) -> dict[str, str]:
        """What a serving node (a Ray node, an operator's evaluator) needs to read artifacts
        from this store: its client environment and a node cache under ``run_dir``."""
        return {**self.client_env(), "LVM_ARTIFACT_CACHE": str(run_dir / "artifact-cache")}

    def client_env(self) -> dict[str, str]:
        """The standard S3 client environment for this store."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout_s: float = 90) -> SeaweedS3:
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.binary} is missing: run scripts/setup.sh (it builds "
                                    "SeaweedFS from the Go module proxy)")
        data = self.run_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "lvm-rollout",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        config.chmod(0o600)
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = free_ports(8)
        self.s3_port = s3
        argv = [
            str(self.binary), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",  # small, sparse volumes
            # each bucket is a collection that grows 7 volumes at once: room for ~30 buckets
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=200",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self.process = ManagedProcess("seaweedfs", argv, self.run_dir / "seaweedfs.log").start()
        try:
            self.process.wait_ready(lambda: _s3_ready(self.endpoint), timeout_s, what="S3 ready")
        except Exception:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    # --- filling buckets (tests, the demo) ------------------------------------------------

    def _store(self, bucket: str):
        from obstore.store import S3Store

        return S3Store(bucket, endpoint=self.endpoint, region=REGION,
                       access_key_id=self.access_key, secret_access_key=self.secret_key,
                       client_options={"allow_http": True}, virtual_hosted_style_request=False)

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data`` to ``s3://bucket/key`` (the bucket is created on first upload);
        returns the URI."""
        import obstore

        obstore.put(self._store(bucket), key, data)
        return f"s3://{bucket}/{key}"

    def put_file(self, bucket: str, key: str, path: Path) -> tuple[str, str]:
        """Upload a file; returns (URI, sha256 of its bytes)."""
        data = Path(path).read_bytes()
        return self.put(bucket, key, data), hashlib.sha256(data).hexdigest()

    def get(self, bucket: str, key: str) -> bytes:
        import obstore

        return bytes(obstore.get(self._store(bucket), key).bytes())
