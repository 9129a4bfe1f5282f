"""Data layer: episodes, Minari I/O, scripted behaviour and our offline sets, normalisers, training windows.

gymnasium and minari are imported inside the functions that need them, so importing this package stays light.
"""

from wfdiffuser.data.behaviour import (
    CONTROLLERS,
    OFFLINE_DATASETS,
    NoiseLevel,
    OfflineSpec,
    build_from_spec,
    build_offline_dataset,
    collect_episodes,
    load_or_build,
    inverted_pendulum_pd,
    pendulum_swing_up,
    reference_scores,
)
from wfdiffuser.data.episodes import Episode
from wfdiffuser.data.minari_io import (
    DatasetInfo,
    DatasetNotFoundError,
    dataset_exists,
    dataset_path,
    dataset_root,
    load_episodes,
    parse_dataset_id,
    write_dataset,
)
from wfdiffuser.data.normalizers import (
    NORMALIZERS,
    CDFNormalizer,
    GaussianNormalizer,
    LimitsNormalizer,
    Normalizer,
    build_normalizer,
    normalizer_from_state,
)
from wfdiffuser.data.windows import PADS, RETURN_LABELS, ReturnLabel, SequenceDataset, discounted_rtg

__all__ = [
    "CONTROLLERS",
    "NORMALIZERS",
    "OFFLINE_DATASETS",
    "PADS",
    "RETURN_LABELS",
    "CDFNormalizer",
    "DatasetInfo",
    "DatasetNotFoundError",
    "Episode",
    "GaussianNormalizer",
    "LimitsNormalizer",
    "NoiseLevel",
    "Normalizer",
    "OfflineSpec",
    "ReturnLabel",
    "SequenceDataset",
    "build_from_spec",
    "build_normalizer",
    "build_offline_dataset",
    "collect_episodes",
    "dataset_exists",
    "dataset_path",
    "dataset_root",
    "discounted_rtg",
    "inverted_pendulum_pd",
    "load_episodes",
    "load_or_build",
    "normalizer_from_state",
    "parse_dataset_id",
    "pendulum_swing_up",
    "reference_scores",
    "write_dataset",
]

