"""The one configuration object of the service and its tools.

Every setting has a default, can be set by an environment variable
(``ORIGIN_ID_<NAME>``, plus the conventional ``DATABASE_URL``) and, for the
command-line tools, by a flag of the same name (``--max-top-k``). Flags win
over the environment, which wins over defaults. Nothing else in the code base
reads the environment for settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

MiB = 1024 * 1024


def _default_model_dir() -> Path:
    return Path(__file__).resolve().parent / "default_model"


@dataclass(frozen=True)
class Settings:
    # Where things live.
    data_dir: Path = field(default=Path(".data/origin-id"),
                           metadata={"help": "embedded PostgreSQL cluster and index files"})
    database_url: str = field(default="", metadata={
        "help": "external PostgreSQL (postgresql+psycopg://...); empty = embedded under data_dir",
        "env": "DATABASE_URL"})
    # Models.
    vae: str = field(default="", metadata={
        "help": "VAE: Hugging Face id or local directory; empty = bundled default"})
    transform: str = field(default="", metadata={
        "help": "ID2 linear transform (.safetensors); empty = bundled default"})
    detectors: str = field(default="", metadata={
        "help": "directory of the inpainting detector, denoiser and localizer; empty = bundled default"})
    inpainting: bool = field(default=True, metadata={
        "help": "run inpainting detection (and localization when warranted) on every query"})
    inpainting_precision: str = field(default="float32", metadata={
        "help": "float32 or bfloat16: the inpainting models' arithmetic. float32 gives every host the "
                "same verdicts; bfloat16 is faster on CPUs with AMX, and its verdicts can differ from "
                "float32's for images near the threshold"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    batch_size: int = field(default=16, metadata={"help": "images per embedding batch"})
    # Client commands.
    server: str = field(default="", metadata={
        "help": "HOST:PORT of a running server for the client commands; empty = a private server on data_dir"})
    api_key: str = field(default="", metadata={"help": "API key the client commands send (ORIGIN_ID_API_KEY)"})
    tls_ca: str = field(default="", metadata={
        "help": "client: PEM of the CA that signed the server's certificate; set = talk TLS"})
    tls_client_cert: str = field(default="", metadata={"help": "client: PEM certificate for mutual TLS"})
    tls_client_key: str = field(default="", metadata={"help": "client: PEM private key for mutual TLS"})
    # Server.
    host: str = field(default="127.0.0.1", metadata={"help": "address the gRPC server binds"})
    port: int = field(default=50051, metadata={"help": "gRPC port"})
    max_message_mib: int = field(default=32, metadata={"help": "largest gRPC message, MiB"})
    max_pixels: int = field(default=64_000_000, metadata={
        "help": "largest decoded image (width*height); larger is rejected as a bomb"})
    max_side: int = field(default=20_000, metadata={"help": "largest image width or height"})
    max_whole_pixels: int = field(default=16_000_000, metadata={
        "help": "largest image of a format decoded whole (all but JPEG, which is read at a reduced scale)"})
    default_top_k: int = field(default=10, metadata={"help": "top_k when a request gives 0"})
    max_top_k: int = field(default=1000, metadata={"help": "largest top_k a request may ask"})
    workers: int = field(default=8, metadata={"help": "gRPC worker threads"})
    auth: str = field(default="auto", metadata={
        "help": "on, off or auto: API keys required; auto = on unless the server binds a loopback address"})
    insecure: bool = field(default=False, metadata={
        "help": "allow serving plaintext without API keys on a non-loopback address"})
    tls_cert: str = field(default="", metadata={"help": "server: PEM certificate chain; set = serve TLS only"})
    tls_key: str = field(default="", metadata={"help": "server: PEM private key of tls_cert"})
    tls_client_ca: str = field(default="", metadata={
        "help": "server: PEM CA bundle; set = mutual TLS, clients must show a certificate it signed"})
    max_admitted: int = field(default=8, metadata={
        "help": "compute-bound calls (identify, add) admitted at once; more are refused with RESOURCE_EXHAUSTED"})
    rate_limit: float = field(default=0.0, metadata={
        "help": "calls per second per API key, unless the key sets its own (0 = no limit)"})
    metrics_port: int = field(default=0, metadata={"help": "serve Prometheus /metrics on this port (0 = off)"})
    metrics_host: str = field(default="127.0.0.1", metadata={"help": "address the metrics endpoint binds"})
    log_format: str = field(default="text", metadata={"help": "text or json (one object per line)"})
    db_check_interval_s: float = field(default=0.5, metadata={
        "help": "how often the server checks PostgreSQL (and restarts an embedded one that died)"})
    query_flip: bool = field(default=True, metadata={
        "help": "also search the mirrored query (finds flipped copies; one more embedding per query)"})
    query_trim: bool = field(default=True, metadata={
        "help": "also search the query with letterbox / canvas / screenshot borders trimmed, when it has some"})
    reference_regions: bool = field(default=True, metadata={
        "help": "also index each reference by 6 crops of itself (finds cropped copies; 7 vectors per "
                "reference instead of 1, no extra encoder pass)"})
    verify_candidates: int = field(default=5, metadata={
        "help": "verify this many top candidates by keypoints (geometric verification; the top-1's inliers "
                "enter the match decision when the model's background set is calibrated for it; 0 = off)"})
    keypoint_candidates: int = field(default=10, metadata={
        "help": "verify as well the references whose keypoints most of the query's match (a keypoint index "
                "in memory, ~15 MB per 1,000 references; finds crops and framed copies the vectors rank "
                "low; needs verify_candidates > 0; 0 = off)"})
    match_threshold: float = field(default=float("nan"), metadata={
        "help": "override the model's calibrated match threshold, on the margin over the background score "
                "when a background set is loaded; it replaces the whole calibrated rule, verification "
                "included (nan = use the model's)"})
    background: str = field(default="", metadata={
        "help": "background set (.safetensors) for open-set decisions; empty = the model directory's, "
                "if it has one; none = decide on the raw top-1 score"})
    # Index.
    index_save_interval_s: float = field(default=30.0, metadata={
        "help": "how often a changed index is checkpointed to disk"})
    index_sync_interval_s: float = field(default=2.0, metadata={
        "help": "how often the index picks up rows written by other processes"})
    faiss_gpu: str = field(default="auto", metadata={"help": "auto, on or off"})
    index_memory_mib: float = field(default=1024.0, metadata={
        "help": "memory the vector index may take; above it, and past 100k vectors, codes are compressed"})
    change_log_keep_s: float = field(default=86_400.0, metadata={
        "help": "how long index changes are kept for replicas; a replica saved longer ago rebuilds"})

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mib * MiB

    @property
    def model_dir(self) -> Path:
        return _default_model_dir()

    @property
    def region_layout(self) -> tuple:
        """The regions each reference is indexed by (``origin_id.indexer.regions``)."""
        from origin_id.indexer.regions import DEFAULT_LAYOUT

        return DEFAULT_LAYOUT if self.reference_regions else ()

    # -- construction -----------------------------------------------------------

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env", f"ORIGIN_ID_{f.name.upper()}")
            if name in env and env[name] != "":
                values[f.name] = _parse(hints[f.name], env[name], name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: list[str] | None = None,
                      exclude: list[str] = ()) -> None:
        """Add one ``--flag`` per setting (default None: unset flags keep env/defaults),
        or per setting in ``only``, less those in ``exclude``."""
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (only is not None and f.name not in only) or f.name in exclude:
                continue
            kind = hints[f.name]
            parser.add_argument(
                "--" + f.name.replace("_", "-"), dest=f.name, default=None,
                type=(lambda s, k=kind, n=f.name: _parse(k, s, "--" + n.replace("_", "-"))),
                help=f"{f.metadata.get('help', '')} (default: {f.default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_env(**{k: v for k, v in vars(args).items() if k in names})


def _parse(kind: Any, text: str, source: str) -> Any:
    try:
        if kind is Path or kind == "Path":
            return Path(text)
        if kind is bool or kind == "bool":
            if text.lower() in {"1", "true", "yes", "on"}:
                return True
            if text.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            return float(text)
        return text
    except ValueError:
        raise ValueError(f"{source}: cannot read {text!r} as {getattr(kind, '__name__', kind)}") from None
