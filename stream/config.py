"""The service configuration: ``config.toml`` -> frozen dataclasses, strictly checked at start.

Every tunable has a default here; the file overrides any subset. An unknown key, a wrong type or an
out-of-range value raises :class:`ConfigError` naming the dotted key and the allowed range.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.access import MIN_TOKEN_CHARS, is_loopback, origin_problem
from stream.records import SAMPLE_RATE_HZ
from training.settings import (
    DEVICE,
    TEXT_DTYPES,
    ConfigError,
    TrainingConfig,
    bounds,
    choices,
    load_section,
    read_toml,
)

__all__ = [
    "ASRConfig",
    "AudioConfig",
    "BusConfig",
    "ClassifierConfig",
    "Config",
    "ConfigError",
    "LogConfig",
    "ServerConfig",
    "SpeakersConfig",
    "VADConfig",
    "load_config",
]


@dataclass(frozen=True, slots=True)
class AudioConfig:
    sample_rate_hz: int = field(default=SAMPLE_RATE_HZ, metadata=bounds(8000, 48000))
    mic_device: str = ""  # index or name substring; empty = the system default input
    mic_block_ms: int = field(default=30, metadata=bounds(10, 1000))
    mic_buffer_s: float = field(default=10.0, metadata=bounds(0.5, 600.0))
    mic_retry_initial_s: float = field(default=0.5, metadata=bounds(0.01, 60.0))
    mic_retry_max_s: float = field(default=30.0, metadata=bounds(0.1, 3600.0))
    replay_speed: float = field(default=1.0, metadata=bounds(0.0, 1000.0, low_open=True))
    replay_fast: bool = False
    replay_chunk_ms: int = field(default=100, metadata=bounds(10, 10000))

    def __post_init__(self) -> None:
        if self.sample_rate_hz != SAMPLE_RATE_HZ:
            # The VAD, Whisper and the audio features all work at 16 kHz; sources resample to it.
            raise ConfigError(
                f"audio.sample_rate_hz = {self.sample_rate_hz} is not supported; allowed: {SAMPLE_RATE_HZ}"
            )
        if self.mic_retry_max_s < self.mic_retry_initial_s:
            raise ConfigError("audio.mic_retry_max_s must be >= audio.mic_retry_initial_s")


@dataclass(frozen=True, slots=True)
class VADConfig:
    engine: str = field(default="webrtc", metadata=choices("webrtc", "silero"))
    frame_ms: int = field(default=30, metadata=bounds(10, 30))
    aggressiveness: int = field(default=2, metadata=bounds(0, 3))
    silero_threshold: float = field(default=0.5, metadata=bounds(0.0, 1.0, low_open=True, high_open=True))
    pre_roll_ms: int = field(default=300, metadata=bounds(0, 5000))
    post_roll_ms: int = field(default=200, metadata=bounds(0, 5000))
    min_speech_ms: int = field(default=250, metadata=bounds(0, 60000))
    max_utterance_s: float = field(default=15.0, metadata=bounds(0.5, 120.0))
    end_silence_ms: int = field(default=500, metadata=bounds(30, 10000))
    # End of turn: at a pause this long inside an utterance, Whisper reads the words so far; a finished
    # sentence ends the utterance there (0 = off: only end_silence_ms ends utterances). Turns in a scene
    # hardly pause (MELD's median gap is 0.17 s); a speaker's multi-sentence turn comes out one utterance
    # per sentence.
    end_of_turn_pause_ms: int = field(default=100, metadata=bounds(0, 10000))
    # ... and only once a second reading (at the next pause, or end_of_turn_confirm_ms on), with the words after
    # it in view, does not run on past that sentence end (Whisper ends any audio it is given with a full
    # stop). False: at once.
    end_of_turn_confirm: bool = True
    # ... the reading made when the speaker goes on without a pause: after this much audio past the candidate
    # (a sentence end waits at most this long, plus Whisper's time, for its confirmation).
    end_of_turn_confirm_ms: int = field(default=600, metadata=bounds(100, 10000))
    # ... or by a comma there (Whisper joins a quick reply to the line before with one) when the voice changes
    # across the pause by this much (the score of speaker_change_score below); 0 = commas never confirm.
    end_of_turn_voice_score: float = field(default=2.0, metadata=bounds(0.0, 100.0))
    # ... or, whatever the later reading says, when the speaker encoder hears another voice after the pause;
    # with end_of_turn_confirm, so is a pause whose reading ended no sentence. Another voice: the cosine
    # similarity of the speaker stage's embeddings of the words before the pause and of the audio after it (at
    # least 0.5 s of each) under this. Whisper often reads two people's acted lines as one, words them
    # differently on the second reading, or reads the next speaker's first words into the line before; their
    # voices still differ. Needs [speakers] enabled; 0 = off.
    end_of_turn_voice_similarity: float = field(default=0.45, metadata=bounds(0.0, 1.0))
    # Early start: once an utterance has had this much trailing silence, Whisper, the speaker embedding and
    # the audio features start on it as it will be if that silence ends it; the work is used when it does
    # and dropped when speech resumes. Where utterances end does not change. 0 = off; never before
    # post_roll_ms of silence (until then the utterance's last samples are not known).
    early_start_ms: int = field(default=200, metadata=bounds(0, 10000))
    # Speaker change inside a segment (stream/stages/change_points.py): a pause of at least
    # speaker_change_min_gap_ms whose two sides score this much (a BIC ratio on MFCCs, > 1 = two voices,
    # plus 0.2 per semitone between their median pitches) cuts the utterance there before Whisper.
    # Dimensionless; 0 = off (it can also cut a sentence pause of one voice: see README).
    speaker_change_score: float = field(default=0.0, metadata=bounds(0.0, 100.0))
    speaker_change_min_gap_ms: int = field(default=50, metadata=bounds(10, 2000))

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"vad.frame_ms = {self.frame_ms} is not allowed; choose one of 10, 20, 30")


@dataclass(frozen=True, slots=True)
class ASRConfig:
    model: str = "base"  # "base" | "tiny.en" (packaged) | a local folder | a hub name
    device: str = field(default="auto", metadata=DEVICE)
    compute_type: str = field(
        default="auto", metadata=choices("auto", "int8", "int8_float32", "float16", "int8_float16", "float32")
    )
    # "en" while the shipped classifier reads English only; "" = detect per utterance (other models).
    language: str = "en"
    beam_size: int = field(default=1, metadata=bounds(1, 16))
    cpu_threads: int = field(default=0, metadata=bounds(0, 256))  # 0 = CTranslate2's default
    no_speech_threshold: float = field(default=0.6, metadata=bounds(0.0, 1.0))
    min_avg_logprob: float = field(default=-1.0, metadata=bounds(-100.0, 0.0))
    # Seconds of silence after an utterance (<= 30 s) in place of Whisper's 30 s window; 30 = always the window.
    pad_s: float = field(default=8.0, metadata=bounds(0.0, 30.0))


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    checkpoint: str = "models/emostream-default.pt"
    device: str = field(default="auto", metadata=DEVICE)
    max_batch: int = field(default=16, metadata=bounds(1, 1024))
    batch_wait_ms: int = field(default=5, metadata=bounds(0, 5000))
    # The text encoder's compute dtype: "auto" = bfloat16 on a CPU that computes it natively (AVX512-BF16
    # or AMX: faster, half the memory), float32 elsewhere; pooled encodings and the heads stay float32.
    text_dtype: str = field(default="auto", metadata=choices(*TEXT_DTYPES))
    # Past context (checkpoints with a context module): the text branch also reads the stream's
    # previous utterances, at most context_utterances of them, each ended within context_window_s
    # before the current one starts. Never the future; reset per stream.
    context: bool = True
    context_utterances: int = field(default=8, metadata=bounds(0, 64))
    context_window_s: float = field(default=90.0, metadata=bounds(0.0, 3600.0))
    # The audio branch's running normalisation (a checkpoint trained with it): each utterance minus
    # the running mean of its speaker's utterances so far ("speaker": per speaker label of the stream,
    # unlabelled ones by the stream's), of the whole stream's ("stream"), or none ("off"). Reset per stream.
    # "stream" by default: the speaker stage's labels still split one voice into several (README).
    audio_norm: str = field(default="stream", metadata=choices("speaker", "stream", "off"))


@dataclass(frozen=True, slots=True)
class SpeakersConfig:
    enabled: bool = True
    encoder: str = "ge2e"  # "ge2e" (packaged in Resemblyzer==0.1.4, offline) | a local checkpoint path
    # Online clustering (stream/stages/speaker_clustering.py): average-linkage similarity that joins two
    # clusters, on embeddings centred on the stream's recent mean (so near 0), and on raw cosine at first.
    threshold: float = field(default=0.1, metadata=bounds(-1.0, 1.0, low_open=True, high_open=True))
    warmup_threshold: float = field(default=0.65, metadata=bounds(-1.0, 1.0, low_open=True, high_open=True))
    warmup_utterances: int = field(default=5, metadata=bounds(2, 100))  # before centring
    window_utterances: int = field(default=40, metadata=bounds(2, 500))  # re-clustered at each new one
    pca_dims: int = field(default=8, metadata=bounds(0, 256))  # window's top principal axes compared (0: all)
    merge_after_utterances: int = field(default=6, metadata=bounds(1, 1000))  # lost this often -> reported merged
    # An earlier utterance of the window whose cluster carries another label in this many successive
    # clusterings is reported re-assigned (a `speaker` event, `corrected`); 0: labels stay as sent.
    correct_after_utterances: int = field(default=2, metadata=bounds(0, 1000))
    max_speakers: int = field(default=8, metadata=bounds(1, 64))
    min_audio_ms: int = field(default=300, metadata=bounds(0, 10000))  # shorter utterances get no speaker

    def clustering(self) -> Any:
        """These settings as :class:`stream.stages.speaker_clustering.ClusteringParams`."""
        from stream.stages.speaker_clustering import ClusteringParams

        return ClusteringParams(
            threshold=self.threshold,
            warmup_threshold=self.warmup_threshold,
            warmup=self.warmup_utterances,
            window=self.window_utterances,
            max_speakers=self.max_speakers,
            pca_dims=self.pca_dims,
            merge_after=self.merge_after_utterances,
            correct_after=self.correct_after_utterances,
        )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=8765, metadata=bounds(0, 65535))
    # Limits
    max_connections: int = field(default=2000, metadata=bounds(1, 100000))
    max_message_bytes: int = field(default=4096, metadata=bounds(64, 1 << 20))
    subscriber_queue_events: int = field(default=1000, metadata=bounds(1, 1_000_000))
    # Browser origins allowed besides the dashboard's own (http://HOST:PORT and, on loopback, the
    # localhost / 127.0.0.1 / [::1] spellings). Clients sending no Origin (scripts) are not browsers.
    allowed_origins: tuple[str, ...] = ()
    # Access token: required on every request when set, and required to bind a non-loopback host.
    token: str = ""
    # The page's own streams: uploads (POST /api/streams) and its microphone (websocket /ingest)
    max_upload_mb: int = field(default=200, metadata=bounds(1, 10240))
    upload_dir: str = "runs/uploads"  # uploads are stored in upload_dir/<run_id>/ while they replay
    keep_uploads: bool = False  # False: an upload is deleted once its stream has ended (events stay logged)
    ingest_max_streams: int = field(default=4, metadata=bounds(0, 64))  # 0: no browser microphones
    ingest_streams_per_client: int = field(default=1, metadata=bounds(1, 16))  # per client address
    ingest_max_frame_bytes: int = field(default=65536, metadata=bounds(1024, 1 << 20))
    ingest_idle_timeout_s: float = field(default=10.0, metadata=bounds(0.5, 3600.0))
    ingest_buffer_s: float = field(default=5.0, metadata=bounds(0.5, 120.0))  # then the socket is not read
    # Timeouts
    ping_interval_s: float = field(default=20.0, metadata=bounds(0.0, 3600.0, low_open=True))
    ping_timeout_s: float = field(default=20.0, metadata=bounds(0.0, 3600.0, low_open=True))
    stats_interval_s: float = field(default=5.0, metadata=bounds(0.0, 3600.0, low_open=True))

    def __post_init__(self) -> None:
        for origin in self.allowed_origins:
            problem = origin_problem(origin)
            if problem:
                raise ConfigError(f"server.allowed_origins: {origin!r} {problem}")
        if self.token and (len(self.token) < MIN_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(self.token)):
            raise ConfigError(
                f"server.token must be at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 . _ ~ - "
                "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        if self.enabled and not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"server.host = {self.host!r} is reachable from other machines, so server.token must be set "
                "(or EMOSTREAM_TOKEN): without it anyone on the network could read the transcripts. "
                "Make one with python3 -c 'import secrets; print(secrets.token_urlsafe(24))', "
                "or bind to 127.0.0.1"
            )


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = field(default="INFO", metadata=choices("DEBUG", "INFO", "WARNING", "ERROR"))
    event_log_dir: str = "runs/events"
    stdout_events: bool = True


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Past one machine: workers and gateways on Redis Streams (see docs/scaling.md)."""

    url: str = ""  # "" = in-process (one `emostream run`); redis://HOST:PORT/DB for worker/gateway/submit
    key_prefix: str = "emostream"  # every Redis key starts with this and ':'
    # Retention (Redis trims with MAXLEN ~, so a little more may be kept)
    stream_maxlen_events: int = field(default=20_000, metadata=bounds(100, 100_000_000))
    firehose_maxlen_events: int = field(default=200_000, metadata=bounds(1000, 1_000_000_000))
    ended_stream_ttl_s: int = field(default=86_400, metadata=bounds(60, 365 * 86_400))
    # Jobs
    worker_jobs: int = field(default=2, metadata=bounds(1, 256))  # streams one worker runs at once
    claim_timeout_s: float = field(default=30.0, metadata=bounds(1.0, 3600.0))  # silent this long: reclaimed
    max_attempts: int = field(default=3, metadata=bounds(1, 100))  # deliveries before a job is given up
    # Connection
    reconnect_max_s: float = field(default=5.0, metadata=bounds(0.1, 300.0))  # backoff cap while Redis is down
    read_block_ms: int = field(default=1000, metadata=bounds(10, 60_000))  # gateway XREAD BLOCK

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"bus.url = {self.url!r}: expected redis://HOST:PORT/DB, rediss://... or unix://...")
        if not self.key_prefix or any(c in self.key_prefix for c in " {}*?[]"):
            raise ConfigError(f"bus.key_prefix = {self.key_prefix!r}: non-empty, no spaces, braces or glob characters")


@dataclass(frozen=True, slots=True)
class Config:
    audio: AudioConfig = AudioConfig()
    vad: VADConfig = VADConfig()
    asr: ASRConfig = ASRConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    speakers: SpeakersConfig = SpeakersConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    bus: BusConfig = BusConfig()
    training: TrainingConfig = TrainingConfig()
    # Where the file was read from; relative paths in it are taken relative to its folder.
    base_dir: str = field(default=".", compare=False)

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder when not absolute."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (``None``: the defaults) and apply dotted ``overrides`` like ``{"asr.model": "tiny.en"}``.

    Overrides are checked exactly like file values.
    """
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    for dotted, value in overrides.items():
        section, _, key = dotted.replace("__", ".").partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] must be a table")
        raw[section][key] = value
    base_dir = str(Path(path).resolve().parent) if path is not None else "."
    names = {f.name for f in dataclasses.fields(Config)} - {"base_dir"}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; allowed sections: {', '.join(sorted(names))}")
    sections: dict[str, Any] = {}
    for fld in dataclasses.fields(Config):
        if fld.name == "base_dir" or fld.name not in raw:
            continue
        table = raw[fld.name]
        if not isinstance(table, dict):
            raise ConfigError(f"[{fld.name}] must be a table, got {type(table).__name__}")
        sections[fld.name] = load_section(_TYPES[fld.name], table, fld.name)
    return Config(**sections, base_dir=base_dir)


_TYPES: dict[str, type] = {
    "audio": AudioConfig,
    "vad": VADConfig,
    "asr": ASRConfig,
    "classifier": ClassifierConfig,
    "speakers": SpeakersConfig,
    "server": ServerConfig,
    "log": LogConfig,
    "bus": BusConfig,
    "training": TrainingConfig,
}
