"""Sample backend of fetch_deepearth: DeepEarth-like observations drawn from the sample world.

Raw layout (the huggingface backend writes exactly the same files):

    observations.parquet       the HF dataset's columns (reference/deepearth-behaviour.md 6)
    vision_embeddings.parquet  gbif_id, embedding (pooled to vision_dim) for has_vision rows

It carries the real dataset's ";"-joined image_urls quirk and a learnable but hard ground truth:
species live in their habitat's land cover and are observed in their season; their abundance is Zipf
with a tail of rare, recently found species that reach the test split unseen; their vision embeddings
(VisionLooks) are confusable within a genus, change with the season and drift with the year, so that on
the default split logistic regression scores about 0.55-0.7 top-1 (tests/test_deepearth.py) and the
2025 holdout is harder than a random test set.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from terrapipe.data.arrays import fixed_lists
from terrapipe.errors import InputDataError
from terrapipe.sources import streams as det
from terrapipe.sources.streams import matmul, unit_vectors
from terrapipe.sources.streams import rng as stream
from terrapipe.sources.world import COVER_CODES, WORLDCOVER, World

# Acceptance probability of a candidate location per land-cover code, by species habitat. The
# small floor keeps rejection sampling finite where a habitat's covers are absent from the box.
HABITAT_COVER = {
    "aquatic": {"water": 1.0, "wetland": 0.6},
    "wetland": {"wetland": 1.0, "tree": 0.4},
    "forest": {"tree": 1.0},
    "upland": {"shrub": 1.0, "grass": 0.8, "tree": 0.3},
    "disturbed": {"built": 1.0, "crop": 0.8, "grass": 0.4},
}
OFF_HABITAT_ACCEPT = 0.01
CANDIDATES_PER_ROUND = 16
ROWS_PER_ROUND = 4096          # pending observations located per land_cover call (bounded memory)
NO_TIME_FRACTION = 0.1        # observations without a time of day (hour/minute/second null)
NO_IMAGE_FRACTION = 0.075     # as in the real dataset (31,136 of 33,665 have images)
JOINED_URLS_FRACTION = 0.05   # rows whose urls come as one ";"-joined string in a length-1 list
ZIPF_EXPONENT = 2.0           # abundance of rank r ~ (r + ZIPF_OFFSET)^-2: a flat head (the commonest
ZIPF_OFFSET = 10.0            # species ~9% of rows) and a tail of species seen once or twice
RECENTLY_FOUND_FRACTION = 0.3  # of the species (the rarest) first recorded in a random year
# Vision embedding (VisionLooks): weights of its parts, all unit vectors but the noise.
GENUS_WEIGHT = 1.0            # shared by congeners, so they are confusable
SPECIES_WEIGHT = 0.5
SEASON_WEIGHT = 0.7           # flowering, fruiting and leaf colour by month, each species its own looks
FRUIT_LAG_MONTHS = 3.0
PHENOPHASE_WIDTH_MONTHS = 1.5
COVER_WEIGHT = 0.5
DRIFT_PER_YEAR = 0.16         # tan of half the yearly turn of each taxon's look (~18 degrees a year)
SUBSPACE_RANK = 8             # per-species directions of large variance (pose, organ, distance)
SUBSPACE_STD = 0.35
NOISE_STD = 0.14              # rms per dimension of the full-rank noise at NOISE_REFERENCE_DIM (scales
NOISE_REFERENCE_DIM = 128     # differ by species and dimension)


def habitat_acceptance(habitats) -> np.ndarray:
    """[len(habitats), len(COVER_CODES)] probability of accepting a location of each cover."""
    accept = np.full((len(habitats), len(COVER_CODES)), OFF_HABITAT_ACCEPT)
    column = {code: i for i, code in enumerate(COVER_CODES)}
    for row, habitat in enumerate(habitats):
        for cover, p in HABITAT_COVER[habitat].items():
            accept[row, column[WORLDCOVER[cover]]] = p
    return accept


def sample_in_habitat(rng: np.random.Generator, world: World, bbox, accept: np.ndarray):
    """Rejection-sample one location per row of ``accept`` inside ``bbox``; returns lat, lon, cover.

    Up to ROWS_PER_ROUND pending rows draw CANDIDATES_PER_ROUND candidates each per round (one land_cover
    call for all of them) and keep their first accepted one; rows without one go to the back of the queue.
    Rounds of bounded size keep memory flat whatever the number of observations.
    """
    west, south, east, north = bbox
    n = len(accept)
    lat, lon, cover = np.empty(n), np.empty(n), np.empty(n, np.uint8)
    pending = np.arange(n)
    while len(pending):
        rows, pending = pending[:ROWS_PER_ROUND], pending[ROWS_PER_ROUND:]
        shape = (len(rows), CANDIDATES_PER_ROUND)
        c_lat, c_lon = rng.uniform(south, north, shape), rng.uniform(west, east, shape)
        c_cover = world.land_cover(c_lat.ravel(), c_lon.ravel()).reshape(shape)
        p = np.take_along_axis(accept[rows], np.searchsorted(COVER_CODES, c_cover), axis=1)
        ok = rng.random(shape) < p
        found = ok.any(axis=1)
        first = ok.argmax(axis=1)[found]
        done = rows[found]
        lat[done], lon[done] = c_lat[found, first], c_lon[found, first]
        cover[done] = c_cover[found, first]
        pending = np.concatenate([pending, rows[~found]])
    return lat, lon, cover


def year_weights(first_year: int, last_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Years and their share of observations: logistic growth (few in the first year, a plateau
    in the last third, as iNaturalist grew) and about half a year's worth in the final partial year."""
    years = np.arange(first_year, last_year + 1)
    span = max(last_year - first_year, 1)
    weights = 1.0 / (1.0 + det.exp(-(years - (first_year + 0.47 * span)) / (span / 9.0)))
    if len(years) > 1:
        weights[-1] *= 0.45
    return years, weights / weights.sum()


def observation_years(rng: np.random.Generator, years, year_p, rank: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Each observation's year, drawn from ``year_p`` from its species' first record on. The rarest
    RECENTLY_FOUND_FRACTION of species are first recorded in a random year (rare plants keep being found
    as observers multiply), so some appear only in the temporal holdout, unseen in training."""
    found = rank >= (1.0 - RECENTLY_FOUND_FRACTION) * len(rank)
    first = np.where(found, rng.integers(0, len(years), len(rank)), 0)
    cdf = np.concatenate([[0.0], np.cumsum(year_p)])
    low = cdf[first[sp]]
    u = low + rng.random(len(sp)) * (1.0 - low)
    return years[np.clip(np.searchsorted(cdf, u, side="right") - 1, first[sp], len(years) - 1)]


def _habitats(species) -> list[str]:
    habitats = species["habitat"].tolist() if "habitat" in species.columns else [None]
    unknown = sorted({str(h) for h in habitats if h not in HABITAT_COVER})
    if unknown:
        raise InputDataError("species.csv", f"column 'habitat' is missing or has unknown values {unknown[:5]}",
                             f"The sample DeepEarth backend needs a habitat per species, one of {list(HABITAT_COVER)}")
    return habitats


def _image_urls(rng: np.random.Generator, n: int, has_vision: np.ndarray) -> list[list[str]]:
    """iNaturalist photo URLs per observation; some rows reproduce the ";"-joined single-string quirk
    (num_images then says 1, the stored list's length, which the tidy stage recomputes)."""
    counts = np.minimum(rng.geometric(0.55, n), 8)
    counts[~has_vision & (rng.random(n) < NO_IMAGE_FRACTION)] = 0
    multi = counts >= 2
    joined = multi & (rng.random(n) < min(1.0, JOINED_URLS_FRACTION / max(multi.mean(), 1e-9)))
    first_photo = 100_000_000 + np.concatenate([[0], np.cumsum(counts)[:-1]]) * 3
    urls = [[f"https://inaturalist-open-data.s3.amazonaws.com/photos/{first + 3 * k}/original.jpg"
             for k in range(count)] for first, count in zip(first_photo, counts)]
    return [[";".join(u)] if j else u for u, j in zip(urls, joined)]


def language_embeddings(seed: int, species, dim: int) -> np.ndarray:
    """float32 [n_species, dim] unit vectors: a genus component shared by congeners plus a species one."""
    genus = [name.split()[0] for name in species["taxon_name"]]
    language = (unit_vectors(seed, "language-genus", genus, dim)
                + 0.7 * unit_vectors(seed, "language-species", species["taxon_id"], dim))
    return language / np.linalg.norm(language, axis=1, keepdims=True)


class VisionLooks:
    """Per-species tables of the vision model, each drawn from a stream named by the taxon (so a species
    looks the same whatever the species list's order or size, and whatever the number of observations).

    An observation's embedding is the unit vector along
        GENUS_WEIGHT * genus prototype + SPECIES_WEIGHT * species look, both turned a little further each
        year towards the taxon's own drift directions (photo style: 2025 lies beyond the training years)
      + SEASON_WEIGHT * (flowering, fruiting, leaf-colour looks weighted by the month)
      + COVER_WEIGHT * land-cover background
      + noise in the species' own SUBSPACE_RANK directions + full-rank noise scaled per species and dimension.
    Memory: about (SUBSPACE_RANK + 8) * dim floats per species, independent of the number of rows.
    """

    def __init__(self, seed: int, species, peak_month: np.ndarray, dim: int, first_year: int, last_year: int):
        taxa = species["taxon_id"].astype(str).tolist()
        genera, self.genus_of = np.unique([name.split()[0] for name in species["taxon_name"]], return_inverse=True)
        self.genus = GENUS_WEIGHT * unit_vectors(seed, "vision-genus", genera, dim)
        self.look = SPECIES_WEIGHT * unit_vectors(seed, "vision-species", taxa, dim)
        self.genus_drift = GENUS_WEIGHT * unit_vectors(seed, "vision-genus-drift", genera, dim)
        self.drift = SPECIES_WEIGHT * unit_vectors(seed, "vision-drift", taxa, dim)
        # Photo style (camera generations, phones, habits) turns every look by the angle 2 atan(DRIFT_PER_YEAR)
        # a year; cos and sin of k times it by repeated rotation (+ - * / only, see the season below).
        t2 = DRIFT_PER_YEAR ** 2
        step = complex((1.0 - t2) / (1.0 + t2), 2.0 * DRIFT_PER_YEAR / (1.0 + t2))
        turn = [complex(1.0, 0.0)]
        for _ in range(first_year, last_year):
            turn.append(turn[-1] * step)
        self.cos_year = np.array([z.real for z in turn], np.float32)
        self.sin_year = np.array([z.imag for z in turn], np.float32)
        phases = ("flowering", "fruiting", "leaf-colour")
        self.season = SEASON_WEIGHT * unit_vectors(
            seed, "vision-season", [f"{t}/{p}" for t in taxa for p in phases], dim).reshape(len(taxa), len(phases), dim)
        self.subspace = SUBSPACE_STD * unit_vectors(
            seed, "vision-subspace", [f"{t}/{k}" for t in taxa for k in range(SUBSPACE_RANK)], dim
        ).reshape(len(taxa), SUBSPACE_RANK, dim)
        # Uniform per-dimension scales (no transcendental functions).
        scale = np.array([stream(seed, "vision-scale", t).uniform(0.4, 1.6, dim) for t in taxa]).reshape(len(taxa), dim)
        # Per-dimension std falls as dim^-1/4: more dimensions make the noise easier to average out of a
        # test vector but the classes harder to estimate, and at this rate the two roughly cancel.
        self.scale = (NOISE_STD * math.sqrt(math.sqrt(NOISE_REFERENCE_DIM / dim) / 1.12) * scale).astype(np.float32)
        self.cover = COVER_WEIGHT * unit_vectors(seed, "vision-cover", COVER_CODES, dim)
        # Rational functions only (+ - * /): numpy's and libm's transcendentals differ in the last bit across CPUs.
        months = np.arange(1, 13) + 0.5
        flowering = (months[None, :] - peak_month[:, None] + 6.0) % 12.0 - 6.0
        fruiting = (flowering - FRUIT_LAG_MONTHS + 6.0) % 12.0 - 6.0
        winter = np.abs((months - 1.0 + 6.0) % 12.0 - 6.0)                 # months from mid-January
        self.phase_weight = np.stack([1.0 / (1.0 + (flowering / PHENOPHASE_WIDTH_MONTHS) ** 2),
                                      1.0 / (1.0 + (fruiting / PHENOPHASE_WIDTH_MONTHS) ** 2),
                                      np.broadcast_to(1.0 - winter / 3.0, flowering.shape)], axis=2).astype(np.float32)
        self.first_year, self.dim = first_year, dim

    def embed(self, z: np.ndarray, sp: np.ndarray, year: np.ndarray, month: np.ndarray, cover: np.ndarray):
        """float32 [n, dim] unit vectors for rows of species index ``sp``; ``z`` is float32 standard
        normal [n, SUBSPACE_RANK + dim]. Elementwise arithmetic only, in a fixed order (no BLAS)."""
        y = year - self.first_year
        genus, cos, sin = self.genus_of[sp], self.cos_year[y, None], self.sin_year[y, None]
        vision = (cos * (self.genus[genus] + self.look[sp]) + sin * (self.genus_drift[genus] + self.drift[sp])
                  + self.cover[np.searchsorted(COVER_CODES, cover)])
        weights = self.phase_weight[sp, month - 1]
        for phase in range(weights.shape[1]):
            vision += weights[:, phase, None] * self.season[sp, phase]
        for k in range(SUBSPACE_RANK):
            vision += z[:, k, None] * self.subspace[sp, k]
        vision += z[:, SUBSPACE_RANK:] * self.scale[sp]
        return vision / np.sqrt(matmul(vision * vision, np.ones((self.dim, 1), np.float32)))


def deepearth_batches(params, study, chunk_rows: int = 2048):
    """(observations, vision embeddings) arrow record batches with the HF dataset's columns, chunk by chunk.

    Per-row metadata is drawn for all rows at once (a few bytes each); the wide columns (the 7,168-D
    language embedding repeated on every row, the 1,408-D vision embedding) are built one chunk at a
    time, so memory does not grow with the number of observations. The random stream is the same as
    drawing everything at once.
    """
    import pyarrow as pa

    sample = params.sources.deepearth.sample
    rng, world, n = stream(params.seed, "deepearth"), World(params.seed), sample.n_observations
    species = study.species.reset_index(drop=True)
    habitats, n_species = _habitats(species), len(species)

    rank = rng.permutation(n_species)
    abundance = det.power(rank + 1.0 + ZIPF_OFFSET, -ZIPF_EXPONENT)
    peak_month, spread = rng.uniform(1, 13, n_species), rng.uniform(0.7, 1.8, n_species)
    sp = rng.choice(n_species, n, p=abundance / abundance.sum())
    years, year_p = year_weights(sample.first_year, sample.last_year)
    year = observation_years(rng, years, year_p, rank, sp)
    month = (np.floor(rng.normal(peak_month[sp], spread[sp])).astype(int) - 1) % 12 + 1
    first_of_month = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    days_in_month = ((first_of_month + 1).astype("datetime64[D]") - first_of_month.astype("datetime64[D]")).astype(int)
    day = rng.integers(1, days_in_month + 1)
    hour = np.clip(np.round(rng.normal(12.0, 2.5, n)), 6, 19).astype(np.int64)
    minute, second = rng.integers(0, 60, n), rng.integers(0, 60, n)
    no_time = rng.random(n) < NO_TIME_FRACTION

    order = np.lexsort((hour, day, month, year))        # GBIF ids grow with the date of the record
    sp, year, month, day, hour, minute, second, no_time = (
        a[order] for a in (sp, year, month, day, hour, minute, second, no_time))
    gbif_id = 1_000_000_000 + np.cumsum(rng.integers(1, 50_000, n))
    lat, lon, cover = sample_in_habitat(rng, world, study.deepearth_bbox,
                                        habitat_acceptance(habitats)[sp])
    has_vision = np.zeros(n, bool)
    has_vision[rng.choice(n, int(round(sample.vision_fraction * n)), replace=False)] = True
    urls = _image_urls(rng, n, has_vision)
    language = language_embeddings(params.seed, species, sample.language_dim)
    taxon_ids = species["taxon_id"].to_numpy(dtype=object)
    taxon_names = species["taxon_name"].to_numpy(dtype=object)
    split = np.where(year < sample.last_year, "train", "temporal_test")
    looks = VisionLooks(params.seed, species, peak_month, sample.vision_dim, sample.first_year, sample.last_year)
    vision_rng = stream(params.seed, "deepearth", "vision")   # one draw per chunk: chunking-independent

    int64 = pa.int64()
    for start in range(0, n, chunk_rows):
        rows = slice(start, start + chunk_rows)
        observations = pa.record_batch({
            "gbif_id": pa.array(gbif_id[rows], int64),
            "taxon_id": pa.array(taxon_ids[sp[rows]], pa.string()),
            "taxon_name": pa.array(taxon_names[sp[rows]], pa.string()),
            "latitude": pa.array(lat[rows]), "longitude": pa.array(lon[rows]),
            "year": pa.array(year[rows], int64), "month": pa.array(month[rows], int64),
            "day": pa.array(day[rows], int64),
            **{name: pa.array(values[rows], int64, mask=no_time[rows])
               for name, values in (("hour", hour), ("minute", minute), ("second", second))},
            "image_urls": pa.array(urls[rows], pa.list_(pa.string())),
            "num_images": pa.array([len(u) for u in urls[rows]], int64),
            "has_vision": pa.array(has_vision[rows]),
            "language_embedding": fixed_lists(language[sp[rows]]),
            "split": pa.array(split[rows], pa.string()),
        })
        v = start + np.flatnonzero(has_vision[rows])
        z = vision_rng.standard_normal((len(v), SUBSPACE_RANK + sample.vision_dim), np.float32)
        vision = looks.embed(z, sp[v], year[v], month[v], cover[v])
        yield observations, pa.record_batch({"gbif_id": pa.array(gbif_id[v], int64), "embedding": fixed_lists(vision)})


def sample_deepearth(params, study):
    """(observations, vision embeddings) as whole arrow tables (for small samples and test fixtures)."""
    import pyarrow as pa

    observations, vision = zip(*deepearth_batches(params, study))
    return pa.Table.from_batches(observations), pa.Table.from_batches(vision)


def fetch_deepearth(params, study, out_dir: Path) -> None:
    """Write observations.parquet and vision_embeddings.parquet (the HF dataset's layout, pooled vision),
    streaming one chunk of rows at a time."""
    import pyarrow.parquet as pq

    writers = {}
    try:
        for batches in deepearth_batches(params, study):
            for name, batch in zip(("observations.parquet", "vision_embeddings.parquet"), batches):
                if name not in writers:
                    writers[name] = pq.ParquetWriter(Path(out_dir) / name, batch.schema)
                writers[name].write_batch(batch)
    finally:
        for writer in writers.values():
            writer.close()
