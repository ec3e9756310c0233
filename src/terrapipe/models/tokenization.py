"""Band groups: which bands of a modality are embedded together as one token (OlmoEarth's TokenizationConfig).

Every modality defaults to its registry band sets (terrapipe.modalities: S2 10/20/60 m, Landsat 15/30 m,
one set for S1, ERA5 and each map). An experiment overrides the groups of a modality by band name, for
example seed 001's single S2 group of all 12 bands or its 10 m + 20 m pair. Group order and band order
inside a group are kept as written. The model (one patch embedding and one group embedding per group)
and masking (one mask channel per group) take their groups from the same ``BandGroups`` object, so the
mask's last axis always equals the model's number of groups.

Only the standard library and the registry are imported (config validation uses this module).
"""
from __future__ import annotations

from dataclasses import dataclass

from terrapipe.modalities import Modality, modality


@dataclass(frozen=True)
class BandGroups:
    """One modality's token groups: ``names[g]`` the band names of group g, ``indices[g]`` their channels."""
    modality: Modality
    names: tuple[tuple[str, ...], ...]

    @property
    def indices(self) -> tuple[tuple[int, ...], ...]:
        """Channel positions in the store's ``band_order`` (the registry order), group by group."""
        return tuple(tuple(self.modality.indices(group)) for group in self.names)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(group) for group in self.names)

    def __len__(self) -> int:
        return len(self.names)


def band_groups(key: str, override: list[list[str]] | None = None) -> BandGroups:
    """The groups of modality ``key``: ``override`` (band names, validated) or the registry band sets.

    Raises ValueError naming an unknown modality or band and listing the accepted ones, an empty group,
    or a band listed twice.
    """
    mod = modality(key)
    if override is None:
        return BandGroups(mod, tuple(tuple(b.name for b in s.bands) for s in mod.band_sets))
    if not override or any(not group for group in override):
        raise ValueError(f"{mod.key} band groups must be non-empty lists of band names, got {override!r}")
    flat = [name for group in override for name in group]
    for name in flat:
        mod.band(name)  # ValueError: unknown band, with the accepted ones
    repeated = sorted({n for n in flat if flat.count(n) > 1})
    if repeated:
        raise ValueError(f"{mod.key} bands {repeated} appear in more than one group; list each band once")
    return BandGroups(mod, tuple(tuple(group) for group in override))
