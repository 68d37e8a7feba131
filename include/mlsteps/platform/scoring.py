"""What the scoring steps share: the model pinned for a day, its input, and staging of shard output.

Scoring is split so it can fan out: ``plan-scoring`` resolves the alias to one concrete version
and checks the input once; each ``score`` shard writes parts and a receipt to a staging area
keyed by the DAG run; ``commit-predictions`` publishes the partition only when every shard's
receipt is there. Run alone, ``score`` does all three.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import (
    features_prefix,
    partition,
    predictions_prefix,
    shadow_predictions_prefix,
    training_run_name,
)
from mlsteps.errors import StepError
from mlsteps.logic.calibration import calibrate
from mlsteps.platform.lake import Lake, Staging

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    from mlsteps.contract.config import ColumnSpec, PipelineConfig
    from mlsteps.platform.mlflow_registry import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringInput:
    """The committed feature partition of one day."""

    prefix: str
    files: list[str]
    rows: int
    fingerprint: str


def scoring_input(lake: Lake, config: PipelineConfig, day: dt.date) -> ScoringInput:
    """The day's committed feature rows, or a clear refusal when there are none."""
    prefix = partition(features_prefix(config), day)
    manifest = lake.manifest(prefix)
    if manifest is None:
        raise StepError(
            f"no committed features for ds={day} at {lake.url(prefix)}; run validate and build-features "
            "for that day first"
        )
    if manifest["rows"] == 0:
        raise StepError(f"the scoring input for ds={day} at {lake.url(prefix)} is empty; nothing to score")
    checksums = "".join(sorted(entry["sha256"] for entry in manifest["files"]))
    fingerprint = hashlib.sha256(checksums.encode()).hexdigest()
    return ScoringInput(
        prefix, [f"{prefix}/{e['path']}" for e in manifest["files"]], manifest["rows"], fingerprint
    )


@dataclass(frozen=True)
class PinnedModel:
    """A concrete registered version, resolved once from an alias."""

    name: str
    version: str
    run_id: str
    alias: str
    #: Where the version's files are (``ModelVersion.source``), so loading needs no second lookup.
    source: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def output_prefix(config: PipelineConfig, day: dt.date, shadow: bool = False) -> str:
    """Where a scored day is committed: the champion's predictions, or the shadow prefix apart from them."""
    prefix = shadow_predictions_prefix if shadow else predictions_prefix
    return prefix(config.model.registered_name, day)


def staging_for(
    lake: Lake, config: PipelineConfig, day: dt.date, run_id: str, shadow: bool = False
) -> Staging:
    """The staging area shared by every shard of one DAG run (deterministic, so retries reuse it)."""
    attempt = training_run_name(run_id or f"manual-{day}")
    return Staging(lake, output_prefix(config, day, shadow), attempt)


def load_model(model: PinnedModel) -> LoadedModel:
    """Download the pinned version's model once: its native booster and its calibrator (if any)."""
    from mlsteps.platform import mlflow_registry

    return mlflow_registry.load_model(model.name, model.version, model.source)


def load_booster(model: PinnedModel) -> xgb.Booster:
    """The pinned version's booster alone (for its feature names)."""
    return load_model(model).booster


def check_signature(booster: xgb.Booster, columns: list[str], where: str) -> list[str]:
    """The model's feature names, after checking the input provides every one of them."""
    expected = list(booster.feature_names or [])
    if not expected:
        raise StepError(f"model has no feature names recorded; retrain it with this pipeline ({where})")
    missing = [name for name in expected if name not in columns]
    if missing:
        raise StepError(
            f"input {where} does not match the model's signature: missing feature column(s) {missing}; "
            "rebuild the features with the config the model was trained on"
        )
    return expected


def input_columns(lake: Lake, relative: str) -> list[str]:
    """The column names of one committed input file."""
    with _parquet(lake, relative) as parquet:
        return list(parquet.schema_arrow.names)


@contextmanager
def _parquet(lake: Lake, relative: str) -> Iterator[pq.ParquetFile]:
    """Open a committed Parquet file; a corrupt one is refused in one sentence, not a crash.

    Raises:
        StepError: The file is not readable Parquet (retrying cannot fix it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with lake.fs.open_input_file(lake.path(relative)) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowException as err:
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise StepError(
                f"{lake.url(relative)} is not readable Parquet ({reason}); the committed partition is "
                "corrupt: rebuild it (for features, re-run build-features for that day)"
            ) from None
        yield parquet


def shard_units(
    lake: Lake, files: list[str], shard_index: int, shard_count: int
) -> Iterator[tuple[str, int]]:
    """(file, row group) units of this shard: unit k belongs to shard k mod shard_count."""
    unit = 0
    for relative in files:
        with _parquet(lake, relative) as parquet:
            groups = parquet.metadata.num_row_groups
        for group in range(groups):
            if unit % shard_count == shard_index:
                yield relative, group
            unit += 1


#: Batches timed on every core before the thread count for the rest is chosen (:class:`PredictThreads`).
PROBE_BATCHES = 3
#: Batches read and encoded ahead of the one being predicted (bounds memory: 2 batches in flight).
PREFETCH_BATCHES = 2
#: Bytes of batches read while the model is still loading, at most (raw, every column of the file;
#: one batch at least).
BYTES_BEFORE_MODEL = 128 * 2**20


def encode_batch(batch: pa.RecordBatch, features: list[str], config: PipelineConfig) -> np.ndarray:
    """The batch's features as one float32 Fortran-ordered matrix, built in Arrow.

    It gives exactly what :func:`mlsteps.platform.datasets.model_input` gives XGBoost: a categorical value
    becomes its index in the column's encoded categories (:func:`category_codes`), booleans become
    0/1 and nulls NaN. No pandas, no per-row Python. A numeric or boolean column without nulls is
    converted once, straight into the matrix; a column with nulls goes through ``pc.cast`` (nulls
    become NaN). One check for infinite values covers the whole batch.

    Raises:
        StepError: A feature column cannot be read as a number, or holds infinite values.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    matrix = np.empty((batch.num_rows, len(features)), dtype=np.float32, order="F")
    for index, name in enumerate(features):
        column = batch.column(name)
        spec = config.dataset.columns.get(name)
        if spec is not None and spec.type == "categorical":
            column = category_codes(column, spec)
        kind = column.type
        direct = column.null_count == 0 and (
            pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)
        )
        try:
            if direct:
                matrix[:, index] = column.to_numpy(zero_copy_only=False)
            else:
                matrix[:, index] = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise StepError(f"feature column {name!r} ({column.type}) cannot be scored: {err}") from err
    if np.isinf(matrix).any():  # NaN is a missing value to the model; infinity is a bug
        name = features[int(np.flatnonzero(np.isinf(matrix).any(axis=0))[0])]
        raise StepError(
            f"feature column {name!r} holds infinite values, which no model was trained on; "
            "fix the feature computation or the source data and rebuild the features"
        )
    return matrix


def category_codes(column: pa.Array | pa.ChunkedArray, spec: ColumnSpec) -> pa.Array | pa.ChunkedArray:
    """Codes of ``spec.encoded_categories``: a value outside the configured ones is "other"'s code
    (``unseen: other``) or missing (``unseen: fail``), as a ``pd.Categorical`` code of -1 is; nulls stay null.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    configured = list(spec.categories or ())
    codes = pc.index_in(column, value_set=pa.array(configured, pa.string()))
    if spec.unseen == "fail":
        return codes
    unseen = pc.and_(pc.is_valid(column), pc.is_null(codes))
    return pc.if_else(unseen, pa.scalar(len(configured), codes.type), codes)


@dataclass(frozen=True)
class ScoredBatch:
    """One scored batch: which unit and batch it was, and its output (keys, score, decision)."""

    unit_number: int
    batch_number: int
    table: pa.Table


def score_units(
    lake: Lake,
    config: PipelineConfig,
    model: Future[LoadedModel],
    units: Iterable[tuple[str, int]],
    batch_rows: int,
) -> Iterator[ScoredBatch]:
    """Score row groups batch by batch in three overlapping stages: read, predict, and the caller's write.

    ``model`` may still be loading: the score step resolves and downloads it in the background, so
    the registry's round trips and the download overlap reading. Until it is there, the reader
    holds up to :data:`BYTES_BEFORE_MODEL` of batches, read with every column of their file; then
    the model's features are checked against those columns (:func:`check_signature`) and later
    units are read with only the keys and those features.

    The score is the booster's output calibrated by the model's calibrator (if any), as evaluation
    scores the holdout; the decision is that score at or above ``scoring.decision_threshold``.
    One background thread reads ``batch_rows`` at a time without pre-buffering (arrow#39808) and
    encodes each batch; a second predicts; the caller writes each scored batch while the next ones
    are read and predicted. With a small model, writing a batch (zstd Parquet) costs more than
    predicting it; on the predicting thread the write would make scoring cost predict + write, not
    the slower of the two. Each hand-over is a queue of :data:`PREFETCH_BATCHES`, which keeps
    memory flat. Arrow, NumPy and XGBoost release the GIL, so the stages run at once. An error in
    either thread (a model that cannot load or does not match the input, too) is raised here.
    """
    encoded = _encoded_batches(lake, config, model, units, batch_rows)
    return _read_ahead(_scored_batches(config, encoded), PREFETCH_BATCHES)


@dataclass(frozen=True)
class EncodedBatch:
    """A batch read and encoded for the model, with what reading and encoding it cost."""

    unit_number: int
    batch_number: int
    batch: pa.RecordBatch
    matrix: np.ndarray
    model: LoadedModel
    #: Seconds the reader spent on it: reading its rows, then encoding them.
    seconds: float


@dataclass
class PredictThreads:
    """How many threads XGBoost predicts with: XGBoost's default (every core) while predicting is the
    slower stage, one when a single thread predicts a batch faster than it is read and encoded.

    With a small model, scoring is I/O-bound: the reader (Parquet decoding, encoding) and the writer
    need the cores, and XGBoost's extra threads only add scheduling work to a batch that one thread
    predicts in a few milliseconds. A large model is compute-bound and needs every core.

    Predicting starts on every core, and the first :data:`PROBE_BATCHES` batches after the first are
    timed. If predicting them took at least as long as reading them, the model is compute-bound: it
    stays on every core. If it took less than reading even times ``cores`` (an upper bound of one
    thread's time), it moves to one thread. In between, the next :data:`PROBE_BATCHES` batches are
    predicted on one thread, and it stays there if they were predicted faster than they were read.
    So a large model never runs at one thread's speed (probed on one thread, it ran at 0.70x of bare
    predict at 1M rows on 2 cores, 4 of 16 batches at half speed), and a small one, whose time on
    every core is mostly the threads' start-up, is still measured on one thread before it is kept
    on every core.
    """

    #: Cores XGBoost's default uses (:func:`available_cores`).
    cores: int
    probe_batches: int = PROBE_BATCHES
    predicting: float = 0.0
    reading: float = 0.0
    seen: int = 0
    #: The second probe is running: the current batches are predicted on one thread.
    probing_one_thread: bool = False
    chosen: bool = False
    one_thread: bool = False

    def start(self, booster: xgb.Booster) -> None:
        booster.set_param({"nthread": 0})  # XGBoost's default: every core it may use

    def record(self, booster: xgb.Booster, reading: float, predicting: float) -> None:
        """Count one batch's reading (and encoding) and predicting seconds; choose after the probes."""
        self.seen += 1
        if self.seen == 1 or self.chosen:
            return  # the first batch's predicting includes XGBoost's first-call set-up
        self.reading += reading
        self.predicting += predicting
        if (self.seen - 1) % self.probe_batches:
            return
        # Decided: after the one-thread probe, or when every core's time settles it either way.
        clear = self.predicting >= self.reading or self.predicting * self.cores < self.reading
        if self.probing_one_thread or clear:
            self._choose(booster, one_thread=self.predicting < self.reading)
        else:
            self._log("probing one thread")
            self.probing_one_thread = True
            self.predicting = self.reading = 0.0
            booster.set_param({"nthread": 1})

    def _choose(self, booster: xgb.Booster, one_thread: bool) -> None:
        self.chosen, self.one_thread = True, one_thread
        booster.set_param({"nthread": 1 if one_thread else 0})
        self._log("predicting on one thread" if one_thread else "predicting on every core")

    def _log(self, what: str) -> None:
        threads = "one thread" if self.probing_one_thread else f"{self.cores} cores"
        log.info(
            "%s: %d batches predicted in %.3f s on %s, read and encoded in %.3f s",
            what,
            self.probe_batches,
            self.predicting,
            threads,
            self.reading,
        )


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use, as XGBoost counts them for its default thread count: the CPU
    affinity, capped by a cgroup CPU quota (a pod's CPU limit), rounded up."""
    import math

    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs the cgroup's CFS quota allows (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``); None: no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # "max 100000" or "200000 100000"
        return int(quota) / int(period) if quota != "max" else None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _scored_batches(
    config: PipelineConfig, encoded: Iterator[EncodedBatch]
) -> Generator[ScoredBatch, None, None]:
    import pyarrow as pa

    dataset = config.dataset
    keys = [dataset.row_id, *dataset.entity_keys, dataset.event_time]
    threshold = config.scoring.decision_threshold
    threads = PredictThreads(available_cores())
    for item in encoded:
        booster = item.model.booster
        if threads.seen == 0:
            threads.start(booster)
        started = time.perf_counter()
        raw = booster.inplace_predict(item.matrix, validate_features=False)
        threads.record(booster, item.seconds, time.perf_counter() - started)
        scores = calibrate(item.model.calibrator, raw)
        table = pa.table(
            {
                **{key: item.batch.column(key) for key in keys},
                "score": pa.array(scores, pa.float32()),
                "decision": pa.array(scores >= threshold),
            }
        )
        yield ScoredBatch(item.unit_number, item.batch_number, table)


def _encoded_batches(
    lake: Lake,
    config: PipelineConfig,
    model: Future[LoadedModel],
    units: Iterable[tuple[str, int]],
    batch_rows: int,
) -> Iterator[EncodedBatch]:
    """Every unit's batches, read and encoded ahead in a thread."""
    import pyarrow.parquet as pq

    dataset = config.dataset
    keys = [dataset.row_id, *dataset.entity_keys, dataset.event_time]

    def read() -> Generator[EncodedBatch, None, None]:
        held: list[tuple[int, int, pa.RecordBatch, float]] = []  # read, not yet encoded
        held_bytes = 0
        loaded: LoadedModel | None = None
        features: list[str] = []
        where = ""

        def release() -> Generator[EncodedBatch, None, None]:
            """Encode and yield the held batches, waiting for the model (and checking it) the first time."""
            nonlocal loaded, features
            if not held:
                return
            if loaded is None:
                loaded = model.result()
                features = check_signature(loaded.booster, held[0][2].schema.names, where)
            for number, part, raw, reading in held:
                started = time.perf_counter()
                matrix = encode_batch(raw, features, config)
                yield EncodedBatch(number, part, raw, matrix, loaded, reading + time.perf_counter() - started)
            held.clear()

        for unit_number, (relative, group) in enumerate(units):
            with lake.fs.open_input_file(lake.path(relative)) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False)
                columns = [*keys, *features] if loaded is not None else None
                batches = parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)
                asked = time.perf_counter()
                for batch_number, batch in enumerate(batches):
                    where = where or lake.url(relative)
                    held.append((unit_number, batch_number, batch, time.perf_counter() - asked))
                    held_bytes += batch.nbytes
                    if loaded is not None or model.done() or held_bytes >= BYTES_BEFORE_MODEL:
                        yield from release()  # else the model is still loading: read on
                    asked = time.perf_counter()
        yield from release()  # fewer batches in all than the model took to load

    return _read_ahead(read(), PREFETCH_BATCHES)


_DONE = object()


def _read_ahead(items: Generator[Any, None, None], depth: int) -> Iterator[Any]:
    """Yield ``items``, produced by a background thread at most ``depth`` ahead; its errors raise here.

    Closing the generator early stops the thread (it never stays blocked on a full queue).
    """
    stop = threading.Event()
    ahead: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        with closing(items):  # an upstream stage's thread stops now, not when the generator is collected
            try:
                for item in items:
                    if not put(item):
                        return
                put(_DONE)
            except BaseException as err:  # handed to the consumer, which raises it
                put(err)

    reader = threading.Thread(target=produce, name="mlsteps-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := ahead.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def write_receipt(staging: Staging, shard_index: int, shard_count: int, details: dict[str, Any]) -> None:
    """A shard's receipt, written after its parts: the commit trusts receipts, not listings."""
    receipt = {
        "shard_index": shard_index,
        "shard_count": shard_count,
        "files": [entry.__dict__ for entry in staging.files],
        **details,
    }
    staging.lake.write_bytes(f"{staging.root}/receipt-{shard_index:05d}.json", json.dumps(receipt).encode())


def read_receipts(staging: Staging, shard_count: int) -> list[dict[str, Any]]:
    """Every shard's receipt, or a refusal naming the shards that did not finish."""
    receipts, missing = [], []
    for index in range(shard_count):
        path = f"{staging.root}/receipt-{index:05d}.json"
        if staging.lake.exists(path):
            receipts.append(staging.lake.read_json(path))
        else:
            missing.append(index)
    if missing:
        raise StepError(
            f"shard(s) {missing} of {shard_count} have not finished for {staging.prefix}; "
            "the partition stays unpublished until every shard succeeds"
        )
    return receipts


def resolve_model(config: PipelineConfig, alias: str, version: str | None = None) -> PinnedModel:
    """Pin ``models:/<name>@<alias>`` (or an explicit version) to one concrete version.

    Only versions this pipeline produced (its lineage tag) are accepted.

    Raises:
        StepError: The alias is not set (no champion yet), the version does not exist, or it lacks
            this pipeline's lineage.
    """
    from mlsteps.platform import mlflow_registry

    name = config.model.registered_name
    client = mlflow_registry.mlflow_client()
    if version is None:
        version = mlflow_registry.aliases(client, name).get(alias)
        if version is None:
            raise StepError(
                f"registered model '{name}' has no alias '{alias}'; "
                "train and promote a model first (run ml_training)"
            )
    found = mlflow_registry.get_version(client, name, mlflow_registry.parse_version(version))
    mlflow_registry.require_lineage(found, config)
    return PinnedModel(name, str(found.version), str(found.run_id), alias, found.source or None)


def resolve_challenger(config: PipelineConfig) -> PinnedModel | None:
    """The latest challenger to shadow-score, or None when there is none that is not the champion.

    ``train`` points the ``challenger`` alias at every version it registers, so the alias names the
    newest trained version: approved but not promoted, or rejected. Once promoted it is the
    champion, and there is nothing to shadow.
    """
    from mlsteps.platform import mlflow_registry

    found = mlflow_registry.aliases(mlflow_registry.mlflow_client(), config.model.registered_name)
    challenger = found.get(mlflow_registry.CHALLENGER)
    if challenger is None or challenger == found.get(mlflow_registry.CHAMPION):
        return None
    return resolve_model(config, mlflow_registry.CHALLENGER, challenger)
